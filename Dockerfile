# The container image (Kubernetes sidecar) comes with the operations issue.
