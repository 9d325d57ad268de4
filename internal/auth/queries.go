package auth

// Every SQL statement of the token store, in one place.

const createTokenSQL = `
INSERT INTO api_tokens (name, role, principal, hash)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING
RETURNING created_at`

const listTokensSQL = `
SELECT name, role, principal, created_at, revoked_at
FROM api_tokens
ORDER BY name`

const revokeTokenSQL = `
UPDATE api_tokens SET revoked_at = now()
WHERE name = $1 AND revoked_at IS NULL`

const tokenExistsSQL = `SELECT true FROM api_tokens WHERE name = $1`

// authenticateSQL finds a token by its hash (a unique index). The hash is
// returned too, and compared again in constant time.
const authenticateSQL = `
SELECT name, role, principal, hash, revoked_at IS NOT NULL
FROM api_tokens
WHERE hash = $1`
