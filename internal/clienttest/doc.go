// Package clienttest is test harness, not product code: it starts the
// sweeper daemon with its API on, over a test database, with one token per
// role, for the tests of the HTTP clients (apiclient, clients/python,
// clients/typescript) and of the examples.
package clienttest
