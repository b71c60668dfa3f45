"""The node's OCI image store, registry client and image builder."""
