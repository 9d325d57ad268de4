package apiclient

// SetStrict makes c refuse answers with fields its types do not know, so
// tests find a type that lags the server.
func SetStrict(c *Client) { c.strict = true }
