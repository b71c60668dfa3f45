from gantry.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("node", "running")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    node: _types_pb2.Node
    running: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    def __init__(self, node: _Optional[_Union[_types_pb2.Node, _Mapping]] = ..., running: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("node", "lease_ttl_seconds", "heartbeat_interval_seconds")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node: str
    lease_ttl_seconds: int
    heartbeat_interval_seconds: float
    def __init__(self, node: _Optional[str] = ..., lease_ttl_seconds: _Optional[int] = ..., heartbeat_interval_seconds: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class AssignmentsRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("replica", "deployment", "template", "epoch", "track", "revision", "desired", "drain_seconds")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    DRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    replica: str
    deployment: str
    template: _types_pb2.PodTemplate
    epoch: int
    track: str
    revision: int
    desired: str
    drain_seconds: float
    def __init__(self, replica: _Optional[str] = ..., deployment: _Optional[str] = ..., template: _Optional[_Union[_types_pb2.PodTemplate, _Mapping]] = ..., epoch: _Optional[int] = ..., track: _Optional[str] = ..., revision: _Optional[int] = ..., desired: _Optional[str] = ..., drain_seconds: _Optional[float] = ...) -> None: ...

class AssignmentSet(_message.Message):
    __slots__ = ("version", "assignments")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, version: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("replica", "epoch", "phase", "ready", "ip", "ports", "restarts", "reason", "message", "exit_code", "container_id", "deployment")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    replica: str
    epoch: int
    phase: str
    ready: bool
    ip: str
    ports: _containers.RepeatedCompositeFieldContainer[_types_pb2.PortBinding]
    restarts: int
    reason: str
    message: str
    exit_code: int
    container_id: str
    deployment: str
    def __init__(self, replica: _Optional[str] = ..., epoch: _Optional[int] = ..., phase: _Optional[str] = ..., ready: _Optional[bool] = ..., ip: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[_types_pb2.PortBinding, _Mapping]]] = ..., restarts: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., container_id: _Optional[str] = ..., deployment: _Optional[str] = ...) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("node", "replicas")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    node: str
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    def __init__(self, node: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ...) -> None: ...

class StatusAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
