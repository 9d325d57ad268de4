package stress

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tasksweeper/sweeper/internal/testdb"
)

// roleDB is a database set up as deploy/postgres documents it: roles.sql run
// by an administrator, the schema migrated by the owner role with the
// binary, grants.sql run by the owner. Role names are made unique to the
// test (roles are global to the server) and dropped at the end.
type roleDB struct {
	db                    *testdb.DB
	admin                 string // superuser URL of the database
	owner, daemon         string // URLs of the two roles, with the secret password
	ownerRole, daemonRole string
}

// deploySQL reads a file of deploy/postgres with the role names replaced.
func deploySQL(t *testing.T, name string, r *roleDB) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/postgres/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("sweeper_owner", r.ownerRole, "sweeper_daemon", r.daemonRole).Replace(string(b))
}

func newRoleDB(t *testing.T) *roleDB {
	t.Helper()
	db := testdb.NewEmpty(t)
	suffix := strings.TrimPrefix(db.Name, "sweeper_t")
	r := &roleDB{db: db, admin: db.URL, ownerRole: "stress_owner" + suffix, daemonRole: "stress_daemon" + suffix}
	r.deploy(t, true)
	return r
}

// deploy creates r's roles, migrates the schema as the owner and grants the
// daemon role its rights, in the database of r.admin. With drop, the
// roles are dropped when t ends (on a server of the test's own, which goes
// away with it, they need not be).
func (r *roleDB) deploy(t *testing.T, drop bool) {
	t.Helper()
	r.owner = withUser(t, r.admin, r.ownerRole, secret)
	r.daemon = withUser(t, r.admin, r.daemonRole, secret)
	mustExec(t, r.admin, deploySQL(t, "roles.sql", r))
	for _, role := range []string{r.ownerRole, r.daemonRole} {
		mustExec(t, r.admin, fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, role, secret))
	}
	t.Cleanup(func() {
		if !drop {
			return
		}
		// Before testdb drops the database: the roles own objects in it.
		_, _ = queryInt(r.admin, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename IN ($1, $2)`, r.ownerRole, r.daemonRole)
		mustExec(t, r.admin, fmt.Sprintf(`DROP OWNED BY %[1]s, %[2]s CASCADE; DROP ROLE %[1]s; DROP ROLE %[2]s`, r.ownerRole, r.daemonRole))
	})
	if res := run(t, []string{"SWEEPER_DATABASE_URL=" + r.owner}, "migrate", "up"); res.Code != 0 {
		t.Fatalf("migrate up as the owner role: %s", res)
	}
	mustExec(t, r.owner, deploySQL(t, "grants.sql", r))
}
