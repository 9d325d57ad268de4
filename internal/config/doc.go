// Package config builds the sweeper daemon's configuration.
//
// A value comes from four places; a later one wins:
//
//  1. the built-in defaults (Default);
//  2. a YAML file (config.example.yaml at the repository root lists every
//     key with its default);
//  3. SWEEPER_<SECTION>_<KEY> environment variables, for example
//     SWEEPER_SWEEP_HEARTBEAT_TIMEOUT=5m;
//  4. command-line flags registered by RegisterFlags, for example
//     --sweep-heartbeat-timeout=5m.
//
// The connection string (database.url) may also come from DATABASE_URL, which
// is read only when neither the file nor SWEEPER_DATABASE_URL gave a non-empty
// value; a flag still overrides it.
//
// Every key is described once, in the table in keys.go: its YAML path, its
// default, how its text is parsed and checked, and its documentation. The
// environment variable and flag names are derived from the path, and Keys
// exposes the table so that documentation can be checked against it.
//
// Every value is read from text the same way whatever its source: durations
// are Go durations ("30s", "10m"), integers are decimal, booleans are what
// strconv.ParseBool accepts (true, false, 1, 0, ...). The file is strict: an
// unknown key, a list or mapping where a value belongs, or an empty (null)
// value is an error. So is an unknown SWEEPER_* environment variable, except
// SWEEPER_TEST_* and SWEEPER_REQUIRE_DB, which belong to the tests.
//
// Errors are *Error values (Load and Validate join several with errors.Join);
// each names the offending key and where its value came from, and none
// contains the database password. A connection string is only ever shown as
// DisplayDSN renders it from the parsed string (user@host:port/database),
// never as written.
package config
