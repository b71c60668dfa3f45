"""The controller: the cluster's brain and the only writer of etcd."""
