"""The isolation core: runs OCI runtime-spec bundles in namespaces and cgroups."""
