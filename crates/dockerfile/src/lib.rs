//! dagr-dockerfile: Dockerfiles parsed and translated into solver ops.
