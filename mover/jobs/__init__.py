"""Jobs: the coordinator that ties the control plane, the pipeline and the repository
together (``backup``), and the repository-only jobs (``restore``). The CLI and the worker
build typed settings and a ``Reporter`` and call these."""
