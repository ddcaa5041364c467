// Package e2e holds end-to-end tests: the real sender and receiver, joined on
// loopback through the impairment relay, with every counter compared exactly
// against the relay's record of what it delivered.
package e2e
