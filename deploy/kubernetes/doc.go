// Package kubernetes holds the tests of the Kubernetes manifests beside
// it: rendered with kustomize, decoded strictly into the Kubernetes and
// Prometheus Operator API types, checked against the binary and run in a
// namespace lab. It is a module of its own, so that those API types are
// not dependencies of udpprobe.
package kubernetes
