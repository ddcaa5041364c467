package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// memFile is a file in memory that other code reads by path, and whose
// content is replaced at once: a reader opens either the old content or
// the new, never a mix.
type memFile struct{ fd int }

func newMemFile() (*memFile, error) {
	fd, err := unix.MemfdCreate("udpprobe-web-config", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	return &memFile{fd: fd}, nil
}

// path names the file for this process (and only for it).
func (m *memFile) path() string { return fdPath(m.fd) }

func fdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// replace writes b into a new file, lets validate read it by path, and if
// it passes puts the new file in place of the old under the same
// descriptor number, so under the same path.
func (m *memFile) replace(b []byte, validate func(path string) error) error {
	fd, err := unix.MemfdCreate("udpprobe-web-config", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd_create: %w", err)
	}
	defer unix.Close(fd)
	for rest := b; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if err != nil {
			return err
		}
		rest = rest[n:]
	}
	if err := validate(fdPath(fd)); err != nil {
		return err
	}
	return unix.Dup3(fd, m.fd, unix.O_CLOEXEC)
}

// Close releases the file.
func (m *memFile) Close() error { return unix.Close(m.fd) }
