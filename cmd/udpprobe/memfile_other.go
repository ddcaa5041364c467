//go:build !linux

package main

import "errors"

// memFile needs Linux's memfd_create; elsewhere the daemon serves with the
// operator's web configuration file as it is.
type memFile struct{}

func newMemFile() (*memFile, error) {
	return nil, errors.New("keeping the last good web configuration needs Linux")
}

func (*memFile) path() string                                  { return "" }
func (*memFile) replace([]byte, func(path string) error) error { return nil }
func (*memFile) Close() error                                  { return nil }
