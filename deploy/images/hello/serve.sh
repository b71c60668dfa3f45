#!/bin/sh
# The demo app, run once per connection by `nc -ll -e`: stdin/stdout are the socket.
# GET /        -> {"version":"...","hostname":"..."}  (200)
# GET /healthz -> ok                                  (200)
# v2 only: with FAIL_PERCENT=N, about N% of requests to / answer 500.
cr=$(printf '\r')
read -r method path proto
length=0
while read -r line; do
	line=${line%"$cr"}
	[ -z "$line" ] && break
	case "$line" in
	[Cc]ontent-[Ll]ength:*) length=${line#*:}; length=${length# } ;;
	esac
done
[ "$length" -gt 0 ] 2>/dev/null && head -c "$length" >/dev/null
host=$(hostname)
status="200 OK"
case "${path%%\?*}" in
/healthz) body="ok" ;;
/)
	body="{\"version\":\"$APP_VERSION\",\"hostname\":\"$host\"}"
	if [ "$HELLO_FAILURES" = enabled ] && [ "${FAIL_PERCENT:-0}" -gt 0 ] 2>/dev/null &&
		[ $(($(od -An -N2 -tu2 /dev/urandom) % 100)) -lt "$FAIL_PERCENT" ]; then
		status="500 Internal Server Error"
		body="{\"version\":\"$APP_VERSION\",\"hostname\":\"$host\",\"error\":\"injected failure\"}"
	fi
	;;
*) status="404 Not Found"; body="not found" ;;
esac
printf 'HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-App-Version: %s\r\nConnection: close\r\n\r\n%s\n' \
	"$status" $((${#body} + 1)) "$APP_VERSION" "$body"
