from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObjectMeta(_message.Message):
    __slots__ = ("name", "labels", "generation", "uid", "created_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    generation: int
    uid: str
    created_at: str
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., generation: _Optional[int] = ..., uid: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class EnvVar(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ContainerPort(_message.Message):
    __slots__ = ("name", "container_port", "protocol")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    name: str
    container_port: int
    protocol: str
    def __init__(self, name: _Optional[str] = ..., container_port: _Optional[int] = ..., protocol: _Optional[str] = ...) -> None: ...

class ResourceList(_message.Message):
    __slots__ = ("cpu", "memory")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    cpu: str
    memory: str
    def __init__(self, cpu: _Optional[str] = ..., memory: _Optional[str] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("requests", "limits")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    requests: ResourceList
    limits: ResourceList
    def __init__(self, requests: _Optional[_Union[ResourceList, _Mapping]] = ..., limits: _Optional[_Union[ResourceList, _Mapping]] = ...) -> None: ...

class HTTPGetAction(_message.Message):
    __slots__ = ("path", "port")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    path: str
    port: str
    def __init__(self, path: _Optional[str] = ..., port: _Optional[str] = ...) -> None: ...

class TCPSocketAction(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: str
    def __init__(self, port: _Optional[str] = ...) -> None: ...

class ExecAction(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, command: _Optional[_Iterable[str]] = ...) -> None: ...

class Probe(_message.Message):
    __slots__ = ("http_get", "tcp_socket", "exec", "initial_delay_seconds", "period_seconds", "timeout_seconds", "failure_threshold", "success_threshold")
    HTTP_GET_FIELD_NUMBER: _ClassVar[int]
    TCP_SOCKET_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    INITIAL_DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    http_get: HTTPGetAction
    tcp_socket: TCPSocketAction
    exec: ExecAction
    initial_delay_seconds: int
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int
    success_threshold: int
    def __init__(self, http_get: _Optional[_Union[HTTPGetAction, _Mapping]] = ..., tcp_socket: _Optional[_Union[TCPSocketAction, _Mapping]] = ..., exec: _Optional[_Union[ExecAction, _Mapping]] = ..., initial_delay_seconds: _Optional[int] = ..., period_seconds: _Optional[int] = ..., timeout_seconds: _Optional[int] = ..., failure_threshold: _Optional[int] = ..., success_threshold: _Optional[int] = ...) -> None: ...

class PodTemplate(_message.Message):
    __slots__ = ("image", "command", "args", "env", "working_dir", "ports", "resources", "readiness_probe", "liveness_probe", "restart_policy", "termination_grace_period_seconds", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    READINESS_PROBE_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_PROBE_FIELD_NUMBER: _ClassVar[int]
    RESTART_POLICY_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_GRACE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedCompositeFieldContainer[EnvVar]
    working_dir: str
    ports: _containers.RepeatedCompositeFieldContainer[ContainerPort]
    resources: Resources
    readiness_probe: Probe
    liveness_probe: Probe
    restart_policy: str
    termination_grace_period_seconds: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[_Union[EnvVar, _Mapping]]] = ..., working_dir: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[ContainerPort, _Mapping]]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., readiness_probe: _Optional[_Union[Probe, _Mapping]] = ..., liveness_probe: _Optional[_Union[Probe, _Mapping]] = ..., restart_policy: _Optional[str] = ..., termination_grace_period_seconds: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RollingUpdate(_message.Message):
    __slots__ = ("max_surge", "max_unavailable")
    MAX_SURGE_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    max_surge: str
    max_unavailable: str
    def __init__(self, max_surge: _Optional[str] = ..., max_unavailable: _Optional[str] = ...) -> None: ...

class Pause(_message.Message):
    __slots__ = ("duration_seconds",)
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    duration_seconds: int
    def __init__(self, duration_seconds: _Optional[int] = ...) -> None: ...

class Analysis(_message.Message):
    __slots__ = ("max_error_rate", "max_p99_ms", "window_seconds", "min_requests", "max_error_rate_increase", "max_p99_ratio")
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_INCREASE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    max_error_rate: float
    max_p99_ms: float
    window_seconds: int
    min_requests: int
    max_error_rate_increase: float
    max_p99_ratio: float
    def __init__(self, max_error_rate: _Optional[float] = ..., max_p99_ms: _Optional[float] = ..., window_seconds: _Optional[int] = ..., min_requests: _Optional[int] = ..., max_error_rate_increase: _Optional[float] = ..., max_p99_ratio: _Optional[float] = ...) -> None: ...

class CanaryStep(_message.Message):
    __slots__ = ("set_weight", "pause", "analysis")
    SET_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    set_weight: int
    pause: Pause
    analysis: Analysis
    def __init__(self, set_weight: _Optional[int] = ..., pause: _Optional[_Union[Pause, _Mapping]] = ..., analysis: _Optional[_Union[Analysis, _Mapping]] = ...) -> None: ...

class CanaryStrategy(_message.Message):
    __slots__ = ("replicas", "steps")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    steps: _containers.RepeatedCompositeFieldContainer[CanaryStep]
    def __init__(self, replicas: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[CanaryStep, _Mapping]]] = ...) -> None: ...

class Strategy(_message.Message):
    __slots__ = ("type", "rolling_update", "canary", "min_ready_seconds", "progress_deadline_seconds")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ROLLING_UPDATE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    MIN_READY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    type: str
    rolling_update: RollingUpdate
    canary: CanaryStrategy
    min_ready_seconds: int
    progress_deadline_seconds: int
    def __init__(self, type: _Optional[str] = ..., rolling_update: _Optional[_Union[RollingUpdate, _Mapping]] = ..., canary: _Optional[_Union[CanaryStrategy, _Mapping]] = ..., min_ready_seconds: _Optional[int] = ..., progress_deadline_seconds: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("host", "path_prefix", "port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    path_prefix: str
    port: str
    def __init__(self, host: _Optional[str] = ..., path_prefix: _Optional[str] = ..., port: _Optional[str] = ...) -> None: ...

class DeploymentSpec(_message.Message):
    __slots__ = ("replicas", "template", "strategy", "route", "node_selector", "revision_history_limit")
    class NodeSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    NODE_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    REVISION_HISTORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    template: PodTemplate
    strategy: Strategy
    route: Route
    node_selector: _containers.ScalarMap[str, str]
    revision_history_limit: int
    def __init__(self, replicas: _Optional[int] = ..., template: _Optional[_Union[PodTemplate, _Mapping]] = ..., strategy: _Optional[_Union[Strategy, _Mapping]] = ..., route: _Optional[_Union[Route, _Mapping]] = ..., node_selector: _Optional[_Mapping[str, str]] = ..., revision_history_limit: _Optional[int] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("type", "status", "reason", "message", "last_transition")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_FIELD_NUMBER: _ClassVar[int]
    type: str
    status: str
    reason: str
    message: str
    last_transition: str
    def __init__(self, type: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., last_transition: _Optional[str] = ...) -> None: ...

class DeploymentStatus(_message.Message):
    __slots__ = ("replicas", "ready_replicas", "updated_replicas", "available_replicas", "observed_generation", "revision", "conditions")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    READY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    observed_generation: int
    revision: int
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, replicas: _Optional[int] = ..., ready_replicas: _Optional[int] = ..., updated_replicas: _Optional[int] = ..., available_replicas: _Optional[int] = ..., observed_generation: _Optional[int] = ..., revision: _Optional[int] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("api_version", "kind", "metadata", "spec", "status")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: DeploymentSpec
    status: DeploymentStatus
    def __init__(self, api_version: _Optional[str] = ..., kind: _Optional[str] = ..., metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[DeploymentSpec, _Mapping]] = ..., status: _Optional[_Union[DeploymentStatus, _Mapping]] = ...) -> None: ...

class PortBinding(_message.Message):
    __slots__ = ("name", "container_port", "host_port", "host_ip")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_IP_FIELD_NUMBER: _ClassVar[int]
    name: str
    container_port: int
    host_port: int
    host_ip: str
    def __init__(self, name: _Optional[str] = ..., container_port: _Optional[int] = ..., host_port: _Optional[int] = ..., host_ip: _Optional[str] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("name", "deployment", "node", "revision", "track", "phase", "ready", "draining", "reason", "message", "ip", "ports", "epoch", "restarts", "created_at", "template", "exit_code")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    deployment: str
    node: str
    revision: int
    track: str
    phase: str
    ready: bool
    draining: bool
    reason: str
    message: str
    ip: str
    ports: _containers.RepeatedCompositeFieldContainer[PortBinding]
    epoch: int
    restarts: int
    created_at: str
    template: PodTemplate
    exit_code: int
    def __init__(self, name: _Optional[str] = ..., deployment: _Optional[str] = ..., node: _Optional[str] = ..., revision: _Optional[int] = ..., track: _Optional[str] = ..., phase: _Optional[str] = ..., ready: _Optional[bool] = ..., draining: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., ip: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[PortBinding, _Mapping]]] = ..., epoch: _Optional[int] = ..., restarts: _Optional[int] = ..., created_at: _Optional[str] = ..., template: _Optional[_Union[PodTemplate, _Mapping]] = ..., exit_code: _Optional[int] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("cpu_millis", "memory_bytes", "pods")
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    cpu_millis: int
    memory_bytes: int
    pods: int
    def __init__(self, cpu_millis: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., pods: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "address", "capacity", "allocated", "labels", "status", "last_heartbeat", "agent_url", "subnet")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    AGENT_URL_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    capacity: Capacity
    allocated: Capacity
    labels: _containers.ScalarMap[str, str]
    status: str
    last_heartbeat: str
    agent_url: str
    subnet: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[_Union[Capacity, _Mapping]] = ..., allocated: _Optional[_Union[Capacity, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., status: _Optional[str] = ..., last_heartbeat: _Optional[str] = ..., agent_url: _Optional[str] = ..., subnet: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("deployment", "track", "revision", "replica", "address", "port", "ready", "draining", "weight", "node")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    track: str
    revision: int
    replica: str
    address: str
    port: int
    ready: bool
    draining: bool
    weight: int
    node: str
    def __init__(self, deployment: _Optional[str] = ..., track: _Optional[str] = ..., revision: _Optional[int] = ..., replica: _Optional[str] = ..., address: _Optional[str] = ..., port: _Optional[int] = ..., ready: _Optional[bool] = ..., draining: _Optional[bool] = ..., weight: _Optional[int] = ..., node: _Optional[str] = ...) -> None: ...

class RouteEntry(_message.Message):
    __slots__ = ("deployment", "host", "path_prefix", "canary_weight", "endpoints")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    host: str
    path_prefix: str
    canary_weight: int
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, deployment: _Optional[str] = ..., host: _Optional[str] = ..., path_prefix: _Optional[str] = ..., canary_weight: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class EndpointTable(_message.Message):
    __slots__ = ("version", "routes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    routes: _containers.RepeatedCompositeFieldContainer[RouteEntry]
    def __init__(self, version: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[RouteEntry, _Mapping]]] = ...) -> None: ...

class VersionMetrics(_message.Message):
    __slots__ = ("requests", "error_rate", "p99_ms")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    requests: float
    error_rate: float
    p99_ms: float
    def __init__(self, requests: _Optional[float] = ..., error_rate: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("deployment", "type", "phase", "step", "canary_weight", "canary_template", "canary_revision", "stable_revision", "canary_replicas", "message", "stable_metrics", "canary_metrics", "started_at", "step_started_at")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CANARY_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    CANARY_REVISION_FIELD_NUMBER: _ClassVar[int]
    STABLE_REVISION_FIELD_NUMBER: _ClassVar[int]
    CANARY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STABLE_METRICS_FIELD_NUMBER: _ClassVar[int]
    CANARY_METRICS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    type: str
    phase: str
    step: int
    canary_weight: int
    canary_template: PodTemplate
    canary_revision: int
    stable_revision: int
    canary_replicas: int
    message: str
    stable_metrics: VersionMetrics
    canary_metrics: VersionMetrics
    started_at: str
    step_started_at: str
    def __init__(self, deployment: _Optional[str] = ..., type: _Optional[str] = ..., phase: _Optional[str] = ..., step: _Optional[int] = ..., canary_weight: _Optional[int] = ..., canary_template: _Optional[_Union[PodTemplate, _Mapping]] = ..., canary_revision: _Optional[int] = ..., stable_revision: _Optional[int] = ..., canary_replicas: _Optional[int] = ..., message: _Optional[str] = ..., stable_metrics: _Optional[_Union[VersionMetrics, _Mapping]] = ..., canary_metrics: _Optional[_Union[VersionMetrics, _Mapping]] = ..., started_at: _Optional[str] = ..., step_started_at: _Optional[str] = ...) -> None: ...

class RevisionRecord(_message.Message):
    __slots__ = ("revision", "template", "created_at", "cause")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    template: PodTemplate
    created_at: str
    cause: str
    def __init__(self, revision: _Optional[int] = ..., template: _Optional[_Union[PodTemplate, _Mapping]] = ..., created_at: _Optional[str] = ..., cause: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("object", "type", "reason", "message", "first_seen", "last_seen", "count")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    object: str
    type: str
    reason: str
    message: str
    first_seen: str
    last_seen: str
    count: int
    def __init__(self, object: _Optional[str] = ..., type: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., first_seen: _Optional[str] = ..., last_seen: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...
