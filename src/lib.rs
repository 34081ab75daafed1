//! docker-pull: download container images from Docker/OCI registries without a
//! Docker daemon and write archives that `docker load` accepts.
