package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// SQLQuerier is what NewSQL runs the ledger's statements on: a *sql.DB, a
// *sql.Conn or a *sql.Tx, from any PostgreSQL driver of database/sql
// (github.com/lib/pq, github.com/jackc/pgx/v5/stdlib, ...).
type SQLQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqlBeginner is a SQLQuerier that can start a transaction: *sql.DB and
// *sql.Conn. One without BeginTx (a *sql.Tx) is taken to be a transaction.
type sqlBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// NewSQL returns a ledger over q, a *sql.DB, *sql.Conn or *sql.Tx of any
// PostgreSQL driver: the same API, statements and outcomes as New, for
// services written on database/sql. Over a *sql.Tx, the ledger's writes
// commit or roll back with the caller's transaction:
//
//	tx, err := db.BeginTx(ctx, nil) // db is a *sql.DB (lib/pq, pgx stdlib, ...)
//	...
//	res, err := ledger.NewSQL(tx).Insert(ctx, ledger.NewDelegation{...})
//	...
//	err = tx.Commit()
//
// A write that takes two statements (naming the audit actor, then the
// change) runs them in one transaction: one it begins on a *sql.DB or
// *sql.Conn, the caller's on a *sql.Tx. A type of the caller's that has no
// BeginTx method is taken to be a transaction.
//
// What needs pgx itself is not available over database/sql: WithTx takes a
// pgx.Tx (pass a *sql.Tx to NewSQL instead), and the feed's Waiter LISTENs
// on a *pgxpool.Pool (over database/sql, FeedWait works with a
// NewPollingWaiter). Interval columns are read in PostgreSQL's default
// IntervalStyle (postgres); a session with another style gets an error
// naming it when it reads a delegation with its own heartbeat timeout.
func NewSQL(q SQLQuerier) *Ledger {
	if q == nil {
		return &Ledger{}
	}
	return &Ledger{db: sqlDB{q: q}}
}

// sqlDB runs the ledger's statements through database/sql: it is the DB
// seam, so every statement and rule of the ledger stays in one place. It
// converts the few argument types that drivers disagree on (text arrays,
// intervals, named string types) to text that PostgreSQL parses, and scans
// what database/sql cannot (intervals, JSON) itself.
type sqlDB struct{ q SQLQuerier }

var _ DB = sqlDB{}

func (d sqlDB) Exec(ctx context.Context, query string, args ...any) (pgconn.CommandTag, error) {
	res, err := d.q.ExecContext(ctx, query, sqlArgs(args)...)
	if err != nil {
		return pgconn.CommandTag{}, sqlError(err)
	}
	return commandTag(res), nil
}

func (d sqlDB) Query(ctx context.Context, query string, args ...any) (pgx.Rows, error) {
	rows, err := d.q.QueryContext(ctx, query, sqlArgs(args)...)
	if err != nil {
		return nil, sqlError(err)
	}
	return newSQLRows(rows)
}

func (d sqlDB) QueryRow(ctx context.Context, query string, args ...any) pgx.Row {
	rows, err := d.Query(ctx, query, args...)
	return sqlRow{rows: rows, err: err}
}

// SendBatch runs the batch's statements in order, in one transaction (the
// caller's, or one it begins and commits on Close), as pgx runs a batch in
// one implicit transaction: the audit actor that the first statement sets
// with set_config(..., true) reaches the change the next one makes.
func (d sqlDB) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	br := &sqlBatch{ctx: ctx, q: d.q, queued: b.QueuedQueries}
	if beg, ok := d.q.(sqlBeginner); ok {
		tx, err := beg.BeginTx(ctx, nil)
		if err != nil {
			br.err = fmt.Errorf("beginning the batch's transaction: %w", sqlError(err))
			return br
		}
		br.tx, br.q = tx, tx
	}
	return br
}

// sqlBatch is the results of a batch run through database/sql; each result
// read runs the next statement.
type sqlBatch struct {
	ctx    context.Context
	q      SQLQuerier
	tx     *sql.Tx // the transaction begun for the batch; nil in the caller's
	queued []*pgx.QueuedQuery
	next   int
	err    error // the first error: later statements do not run
	closed bool
}

func (b *sqlBatch) take() (*pgx.QueuedQuery, error) {
	if b.err != nil {
		return nil, b.err
	}
	if b.closed {
		return nil, errors.New("batch already closed")
	}
	if b.next >= len(b.queued) {
		return nil, errors.New("no more results in batch")
	}
	qq := b.queued[b.next]
	b.next++
	return qq, nil
}

func (b *sqlBatch) Exec() (pgconn.CommandTag, error) {
	qq, err := b.take()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := sqlDB{q: b.q}.Exec(b.ctx, qq.SQL, qq.Arguments...)
	if err != nil {
		b.err = err
	}
	return tag, err
}

func (b *sqlBatch) Query() (pgx.Rows, error) {
	qq, err := b.take()
	if err != nil {
		return nil, err
	}
	rows, err := sqlDB{q: b.q}.Query(b.ctx, qq.SQL, qq.Arguments...)
	if err != nil {
		b.err = err
	}
	return rows, err
}

func (b *sqlBatch) QueryRow() pgx.Row {
	rows, err := b.Query()
	return sqlRow{rows: rows, err: err, onErr: func(err error) {
		if !errors.Is(err, pgx.ErrNoRows) && b.err == nil {
			b.err = err
		}
	}}
}

// Tx is nil: the batch's transaction, if any, is a *sql.Tx.
func (b *sqlBatch) Tx() pgx.Tx { return nil }

// Close runs the statements not read yet and ends the batch's own
// transaction: committed when every statement succeeded, rolled back
// otherwise. The first error is returned.
func (b *sqlBatch) Close() error {
	if b.closed {
		return b.err
	}
	for b.err == nil && b.next < len(b.queued) {
		_, _ = b.Exec()
	}
	b.closed = true
	if b.tx == nil {
		return b.err
	}
	if b.err != nil {
		_ = b.tx.Rollback()
		return b.err
	}
	if err := b.tx.Commit(); err != nil {
		b.err = fmt.Errorf("committing the batch's transaction: %w", sqlError(err))
	}
	return b.err
}

// sqlRow is QueryRow's answer: the first row of rows, or err.
type sqlRow struct {
	rows  pgx.Rows
	err   error
	onErr func(error) // told of the Scan's error, for a batch
}

func (r sqlRow) Scan(dest ...any) error {
	err := r.scan(dest...)
	if err != nil && r.onErr != nil {
		r.onErr(err)
	}
	return err
}

func (r sqlRow) scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// sqlRows is a *sql.Rows as pgx.Rows, for pgx.CollectRows and
// pgx.RowToStructByName: the column names are all that FieldDescriptions
// carries.
type sqlRows struct {
	rows   *sql.Rows
	fields []pgconn.FieldDescription
	err    error
}

func newSQLRows(rows *sql.Rows) (*sqlRows, error) {
	cols, err := rows.Columns()
	if err != nil {
		_ = rows.Close()
		return nil, sqlError(err)
	}
	fields := make([]pgconn.FieldDescription, len(cols))
	for i, c := range cols {
		fields[i].Name = c
	}
	return &sqlRows{rows: rows, fields: fields}, nil
}

func (r *sqlRows) Close() { _ = r.rows.Close() }

func (r *sqlRows) Err() error {
	if r.err != nil {
		return r.err
	}
	return sqlError(r.rows.Err())
}

// CommandTag is empty: database/sql does not report it for a query.
func (r *sqlRows) CommandTag() pgconn.CommandTag { return pgconn.CommandTag{} }

func (r *sqlRows) FieldDescriptions() []pgconn.FieldDescription { return r.fields }

func (r *sqlRows) Next() bool { return r.err == nil && r.rows.Next() }

// Scan scans the current row into dest. Intervals (into time.Duration) and
// JSON (into json.RawMessage) are converted here; the rest is database/sql's
// conversion.
func (r *sqlRows) Scan(dest ...any) error {
	targets := make([]any, len(dest))
	var fixups []func() error
	for i, d := range dest {
		switch d := d.(type) {
		case *time.Duration:
			var s sql.NullString
			targets[i] = &s
			fixups = append(fixups, func() error {
				if !s.Valid {
					return fmt.Errorf("column %s is NULL", r.fields[i].Name)
				}
				v, err := parseInterval(s.String)
				*d = v
				return err
			})
		case **time.Duration:
			var s sql.NullString
			targets[i] = &s
			fixups = append(fixups, func() error {
				*d = nil
				if !s.Valid {
					return nil
				}
				v, err := parseInterval(s.String)
				if err != nil {
					return fmt.Errorf("column %s: %w", r.fields[i].Name, err)
				}
				*d = &v
				return nil
			})
		case *json.RawMessage:
			var b []byte
			targets[i] = &b
			fixups = append(fixups, func() error { *d = b; return nil })
		default:
			rv := reflect.ValueOf(d)
			if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Slice || rv.Elem().Type().Elem().Kind() != reflect.String {
				targets[i] = d
				break
			}
			// A text[] column into a slice of strings (or of a named
			// string type, []Status).
			var s sql.NullString
			targets[i] = &s
			fixups = append(fixups, func() error {
				slice := rv.Elem()
				if !s.Valid {
					slice.Set(reflect.Zero(slice.Type()))
					return nil
				}
				elems, err := parseTextArray(s.String)
				if err != nil {
					return fmt.Errorf("column %s: %w", r.fields[i].Name, err)
				}
				out := reflect.MakeSlice(slice.Type(), len(elems), len(elems))
				for j, e := range elems {
					out.Index(j).SetString(e)
				}
				slice.Set(out)
				return nil
			})
		}
	}
	if err := r.rows.Scan(targets...); err != nil {
		r.err = fmt.Errorf("scanning a row: %w", err)
		return r.err
	}
	for _, f := range fixups {
		if err := f(); err != nil {
			r.err = fmt.Errorf("scanning a row: %w", err)
			return r.err
		}
	}
	return nil
}

func (r *sqlRows) Values() ([]any, error) {
	vals := make([]any, len(r.fields))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := r.rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	return vals, nil
}

// RawValues is nil: database/sql does not expose the wire bytes.
func (r *sqlRows) RawValues() [][]byte { return nil }

// Conn is nil: there is no pgx connection under database/sql.
func (r *sqlRows) Conn() *pgx.Conn { return nil }

// TypeMap is nil: database/sql's driver decodes the values.
func (r *sqlRows) TypeMap() *pgtype.Map { return nil }

// commandTag is a tag that carries res's rows affected ("" when unknown).
func commandTag(res sql.Result) pgconn.CommandTag {
	n, err := res.RowsAffected()
	if err != nil {
		return pgconn.CommandTag{}
	}
	return pgconn.NewCommandTag("EXEC " + strconv.FormatInt(n, 10))
}

// sqlError maps database/sql's no-row error to pgx's, which the ledger
// tests for; driver errors keep their SQLSTATE (wrapDBError reads it).
func sqlError(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return pgx.ErrNoRows
	}
	return err
}

// sqlArgs converts the ledger's arguments into values every driver sends
// as PostgreSQL text: []string and []*string as an array literal (nil
// elements NULL), a time.Duration (the
// ledger passes them only to interval parameters) as microseconds, nil
// pointers as NULL, named string types as string.
func sqlArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = sqlArg(a)
	}
	return out
}

func sqlArg(a any) any {
	switch v := a.(type) {
	case nil:
		return nil
	case []string:
		return textArray(len(v), func(i int) *string { return &v[i] })
	case []*string:
		return textArray(len(v), func(i int) *string { return v[i] })
	case *string:
		if v == nil {
			return nil
		}
		return *v
	case time.Duration:
		return intervalText(v)
	case *time.Duration:
		if v == nil {
			return nil
		}
		return intervalText(*v)
	case *time.Time:
		if v == nil {
			return nil
		}
		return *v
	case string, bool, int64, float64, time.Time, []byte:
		return v
	case int:
		return int64(v)
	}
	if rv := reflect.ValueOf(a); rv.Kind() == reflect.String {
		return rv.String()
	}
	return a
}

// textArray is n strings as a PostgreSQL array literal, {"a","b",NULL}
// (a nil element is NULL): the text a text[] or jsonb[] parameter parses.
func textArray(n int, elem func(int) *string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		s := elem(i)
		if s == nil {
			b.WriteString("NULL")
			continue
		}
		b.WriteByte('"')
		for _, r := range *s {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// parseTextArray reads a one-dimensional text array as PostgreSQL prints
// it: {a,"b c","d\"e"}; a NULL element is refused (the ledger's arrays
// have none).
func parseTextArray(s string) ([]string, error) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, fmt.Errorf("array %q: not a one-dimensional array", s)
	}
	body := s[1 : len(s)-1]
	out := []string{}
	if body == "" {
		return out, nil
	}
	for i := 0; i <= len(body); {
		var b strings.Builder
		if i < len(body) && body[i] == '"' {
			i++
			for ; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' {
					i++
				}
				if i < len(body) {
					b.WriteByte(body[i])
				}
			}
			if i >= len(body) {
				return nil, fmt.Errorf("array %q: unterminated quote", s)
			}
			i++ // the closing quote
		} else {
			j := strings.IndexByte(body[i:], ',')
			if j < 0 {
				j = len(body) - i
			}
			elem := body[i : i+j]
			if elem == "NULL" {
				return nil, fmt.Errorf("array %q: NULL element", s)
			}
			if strings.ContainsAny(elem, "{}") {
				return nil, fmt.Errorf("array %q: not a one-dimensional array", s)
			}
			b.WriteString(elem)
			i += j
		}
		out = append(out, b.String())
		if i >= len(body) {
			break
		}
		if body[i] != ',' {
			return nil, fmt.Errorf("array %q: expected a comma", s)
		}
		i++
	}
	return out, nil
}

// intervalText is d as PostgreSQL interval input, to the microsecond (the
// interval type's precision).
func intervalText(d time.Duration) string {
	return strconv.FormatInt(d.Microseconds(), 10) + " microseconds"
}

// parseInterval reads an interval in PostgreSQL's default output style
// (IntervalStyle postgres): "[N day[s]] [-]HH:MM:SS[.ffffff]", either part
// optional. Months and years are refused: they are not a fixed duration.
func parseInterval(s string) (time.Duration, error) {
	bad := func(why string) (time.Duration, error) {
		return 0, fmt.Errorf("interval %q: %s (expected IntervalStyle postgres)", s, why)
	}
	fields := strings.Fields(s)
	var total time.Duration
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if strings.Contains(f, ":") {
			neg := strings.HasPrefix(f, "-")
			parts := strings.Split(strings.TrimLeft(f, "+-"), ":")
			if len(parts) != 3 {
				return bad("bad time part")
			}
			h, err1 := strconv.ParseInt(parts[0], 10, 64)
			m, err2 := strconv.ParseInt(parts[1], 10, 64)
			whole, frac, _ := strings.Cut(parts[2], ".")
			sec, err3 := strconv.ParseInt(whole, 10, 64)
			var us int64
			var err4 error
			if frac != "" {
				if len(frac) > 6 {
					return bad("more than microseconds")
				}
				us, err4 = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
			}
			if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
				return bad("bad time part")
			}
			t := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
				time.Duration(sec)*time.Second + time.Duration(us)*time.Microsecond
			if neg {
				t = -t
			}
			total += t
			continue
		}
		if i+1 >= len(fields) {
			return bad("number without a unit")
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return bad("bad number")
		}
		i++
		switch fields[i] {
		case "day", "days":
			total += time.Duration(n) * 24 * time.Hour
		default:
			return bad("unit " + fields[i] + " is not a fixed duration")
		}
	}
	if len(fields) == 0 {
		return bad("empty")
	}
	return total, nil
}
