package config

import (
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// DSNNotShown is what DisplayDSN returns for a connection string that does
// not parse: its parts are ambiguous, so none of it is shown.
const DSNNotShown = "(not shown)"

// DisplayDSN renders the connection string dsn as it may be shown to people,
// in logs, errors and command output: user@host:port/database, rendered from
// what pgx parses, never from the text. Every host of a multi-host string is
// listed (user@h1:5432,h2:5433/app). The password, and every other
// parameter, is left out. An empty dsn gives "" (not set); one that pgx
// refuses, or whose parts hold what looks like part of a password (see
// plausibleDSN), gives DSNNotShown.
//
// Parsing reads what pgx reads for a connection: the PG* environment
// variables, and the service and password files the string names.
func DisplayDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil || !plausibleDSN(pc) {
		return DSNNotShown
	}
	return displayParsedDSN(pc)
}

// plausibleDSN reports whether the parts DisplayDSN shows are what the
// string's author can have meant. pgx accepts some strings whose parts hold
// part of a password written without percent-encoding: in
// postgres://u:p@ss@db/x it reads the host "ss@db", in
// postgres://u:123/ss@db/x the database "ss@db/x". No user, database or
// host name that works holds an '@', so such a string is not shown.
func plausibleDSN(pc *pgconn.Config) bool {
	if strings.Contains(pc.User, "@") || strings.Contains(pc.Database, "@") || !plausibleHost(pc.Host) {
		return false
	}
	for _, f := range pc.Fallbacks {
		if !plausibleHost(f.Host) {
			return false
		}
	}
	return true
}

// plausibleHost accepts a host name, an IP address (with an IPv6 zone) or
// the directory of a Unix socket.
func plausibleHost(host string) bool {
	if strings.HasPrefix(host, "/") {
		return !strings.Contains(host, "@")
	}
	for _, c := range []byte(host) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == ':', c == '%':
		default:
			return false
		}
	}
	return host != ""
}

// displayParsedDSN renders a parsed connection string for DisplayDSN.
func displayParsedDSN(pc *pgconn.Config) string {
	// sslmode=prefer and allow repeat each host once per TLS setting.
	hosts := []string{joinHostPort(pc.Host, pc.Port)}
	for _, f := range pc.Fallbacks {
		if hp := joinHostPort(f.Host, f.Port); !slices.Contains(hosts, hp) {
			hosts = append(hosts, hp)
		}
	}
	return pc.User + "@" + strings.Join(hosts, ",") + "/" + pc.Database
}

// joinHostPort writes host:port, bracketing an IPv6 address; a Unix socket
// directory is written as is (/var/run/postgresql:5432).
func joinHostPort(host string, port uint16) string {
	if strings.HasPrefix(host, "/") {
		return host + ":" + strconv.Itoa(int(port))
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
