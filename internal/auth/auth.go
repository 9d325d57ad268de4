package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksweeper/sweeper/ledger"
)

// Role is what a token may do.
type Role string

// The roles.
const (
	// RoleCaller inserts delegations with its own caller_id, reads, lists
	// and follows them, and may cancel them (move them to failed).
	RoleCaller Role = "caller"
	// RoleWorker heartbeats and moves the delegations whose callee_id is
	// its own, and reads them.
	RoleWorker Role = "worker"
	// RoleReader reads everything and writes nothing.
	RoleReader Role = "reader"
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RoleCaller, RoleWorker, RoleReader, RoleAdmin}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	switch r {
	case RoleCaller, RoleWorker, RoleReader, RoleAdmin:
		return true
	}
	return false
}

// NeedsPrincipal reports whether tokens of role r act for one id.
func (r Role) NeedsPrincipal() bool { return r == RoleCaller || r == RoleWorker }

// Principal is who a request acts as: the token's name, role and, for a
// caller or worker, the caller_id or callee_id it acts for.
type Principal struct {
	TokenName string
	Role      Role
	ID        string
}

// Actor is the audit actor of the principal's writes: "api:<token name>".
func (p Principal) Actor() string { return "api:" + p.TokenName }

// CanSee reports whether p may read delegation d (and its events).
func (p Principal) CanSee(d ledger.Delegation) bool {
	switch p.Role {
	case RoleAdmin, RoleReader:
		return true
	case RoleCaller:
		return d.CallerID == p.ID
	case RoleWorker:
		return d.CalleeID == p.ID
	}
	return false
}

// CanInsert reports whether p may insert a delegation for callerID.
func (p Principal) CanInsert(callerID string) bool {
	switch p.Role {
	case RoleAdmin:
		return true
	case RoleCaller:
		return callerID == p.ID
	}
	return false
}

// CanTransition reports whether p may move delegation d to status to. A
// caller may only cancel (failed) its own; a worker may move its own to any
// status.
func (p Principal) CanTransition(d ledger.Delegation, to ledger.Status) bool {
	switch p.Role {
	case RoleAdmin:
		return true
	case RoleCaller:
		return d.CallerID == p.ID && to == ledger.StatusFailed
	case RoleWorker:
		return d.CalleeID == p.ID
	}
	return false
}

// CanHeartbeat reports whether p may heartbeat delegation d.
func (p Principal) CanHeartbeat(d ledger.Delegation) bool {
	switch p.Role {
	case RoleAdmin:
		return true
	case RoleWorker:
		return d.CalleeID == p.ID
	}
	return false
}

// Errors of the store.
var (
	// ErrUnauthenticated: the token is malformed, unknown or revoked. The
	// error never says which, nor contains the token.
	ErrUnauthenticated = errors.New("invalid or revoked token")
	// ErrTokenExists: a token of that name exists (revoked or not).
	ErrTokenExists = errors.New("a token of that name exists")
	// ErrTokenNotFound: no token has that name.
	ErrTokenNotFound = errors.New("no token of that name")
)

// TokenPrefix starts every token, so that secret scanners and people
// recognise one.
const TokenPrefix = "swp_"

// tokenBytes is the entropy of a token.
const tokenBytes = 32

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName returns why name cannot name a token, or nil.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return &ledger.FieldError{Field: "name", Reason: "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	return nil
}

// DB is what the store runs its statements on (a *pgxpool.Pool).
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Store keeps tokens in the api_tokens table.
type Store struct{ db DB }

// NewStore returns a store over db.
func NewStore(db DB) *Store { return &Store{db: db} }

// Token describes a stored token; the token itself is never kept.
type Token struct {
	Name      string     `json:"name"`
	Role      Role       `json:"role"`
	Principal string     `json:"principal,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Create makes a token named name with role and principal and returns it in
// plain text: the only time it is shown. A caller or worker needs a
// principal (the caller_id or callee_id it acts for); a reader or admin
// takes none.
func (s *Store) Create(ctx context.Context, name string, role Role, principal string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", fmt.Errorf("creating token: %w", err)
	}
	if !role.Valid() {
		return "", fmt.Errorf("creating token: %w", &ledger.FieldError{Field: "role", Reason: fmt.Sprintf("must be caller, worker, reader or admin, got %q", role)})
	}
	switch {
	case role.NeedsPrincipal() && principal == "":
		return "", fmt.Errorf("creating token: %w", &ledger.FieldError{Field: "principal", Reason: fmt.Sprintf("is required for a %s token (the %s it acts for)", role, principalKind(role))})
	case !role.NeedsPrincipal() && principal != "":
		return "", fmt.Errorf("creating token: %w", &ledger.FieldError{Field: "principal", Reason: fmt.Sprintf("does not apply to a %s token", role)})
	case principal != "" && (strings.TrimSpace(principal) == "" || len(principal) > ledger.MaxIDBytes || !utf8.ValidString(principal) || strings.ContainsFunc(principal, func(r rune) bool { return r < 0x20 || r == 0x7f })):
		return "", fmt.Errorf("creating token: %w", &ledger.FieldError{Field: "principal", Reason: "must be a valid id: 1 to 255 bytes of UTF-8 without control characters, not blank"})
	}
	raw := make([]byte, tokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("creating token: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	h := hash(token)
	var created time.Time
	err := s.db.QueryRow(ctx, createTokenSQL, name, string(role), principal, h[:]).Scan(&created)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("creating token %q: %w", name, ErrTokenExists)
	}
	if err != nil {
		return "", fmt.Errorf("creating token %q: %w", name, err)
	}
	return token, nil
}

func principalKind(r Role) string {
	if r == RoleWorker {
		return "callee_id"
	}
	return "caller_id"
}

// List returns every token, revoked ones included, by name.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	rows, err := s.db.Query(ctx, listTokensSQL)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) {
		var t Token
		var role string
		err := r.Scan(&t.Name, &role, &t.Principal, &t.CreatedAt, &t.RevokedAt)
		t.Role = Role(role)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	return ts, nil
}

// Revoke revokes the token named name; from then on it is refused. Revoking
// a revoked token is a no-op; an unknown name is ErrTokenNotFound.
func (s *Store) Revoke(ctx context.Context, name string) error {
	tag, err := s.db.Exec(ctx, revokeTokenSQL, name)
	if err != nil {
		return fmt.Errorf("revoking token %q: %w", name, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var ok bool
	err = s.db.QueryRow(ctx, tokenExistsSQL, name).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("revoking token %q: %w", name, ErrTokenNotFound)
	}
	if err != nil {
		return fmt.Errorf("revoking token %q: %w", name, err)
	}
	return nil
}

// Authenticate returns the principal of token, or an error wrapping
// ErrUnauthenticated when it is malformed, unknown or revoked. Neither the
// error nor anything logged contains the token.
func (s *Store) Authenticate(ctx context.Context, token string) (Principal, error) {
	if !wellFormed(token) {
		return Principal{}, ErrUnauthenticated
	}
	h := hash(token)
	var p Principal
	var role string
	var stored []byte
	var revoked bool
	err := s.db.QueryRow(ctx, authenticateSQL, h[:]).Scan(&p.TokenName, &role, &p.ID, &stored, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable {
			return Principal{}, fmt.Errorf("authenticating: the schema has no api_tokens table (run sweeper migrate up)")
		}
		return Principal{}, fmt.Errorf("authenticating: %w", err)
	}
	if subtle.ConstantTimeCompare(stored, h[:]) != 1 || revoked {
		return Principal{}, ErrUnauthenticated
	}
	p.Role = Role(role)
	return p, nil
}

// wellFormed checks the token's shape before any query: the prefix and 43
// base64url characters.
func wellFormed(token string) bool {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok || len(rest) != base64.RawURLEncoding.EncodedLen(tokenBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

func hash(token string) [32]byte { return sha256.Sum256([]byte(token)) }
