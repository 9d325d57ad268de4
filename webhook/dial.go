package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// AddressError is the refusal to connect to an address that
// Config.AllowPrivateNetworks does not allow: loopback, private,
// link-local, unique-local, shared (CGNAT), cloud metadata, multicast or
// unspecified. It is raised when the connection is about to be made, on
// the address the name resolved to.
type AddressError struct {
	Addr   netip.Addr
	Reason string
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("webhook: refusing to connect to %s (%s); set webhooks.allow_private_networks to allow it", e.Addr, e.Reason)
}

// Ranges refused besides what netip classifies: shared address space
// (RFC 6598, where some clouds serve metadata: 100.100.100.200), "this
// network" 0.0.0.0/8, the IETF protocol block, benchmarking, and the IPv4
// embedded in NAT64 (64:ff9b::/96), checked as IPv4.
var (
	sharedSpace  = netip.MustParsePrefix("100.64.0.0/10")
	thisNetwork  = netip.MustParsePrefix("0.0.0.0/8")
	ietfProtocol = netip.MustParsePrefix("192.0.0.0/24")
	benchmarking = netip.MustParsePrefix("198.18.0.0/15")
	nat64        = netip.MustParsePrefix("64:ff9b::/96")
	metadataV4   = netip.MustParseAddr("169.254.169.254")
	metadataV6   = netip.MustParseAddr("fd00:ec2::254")
)

// CheckAddr returns an *AddressError when a is not a public unicast
// address. An IPv4-mapped IPv6 address (::ffff:127.0.0.1) and a NAT64 one
// are judged by the IPv4 address they carry.
func CheckAddr(a netip.Addr) error {
	a = a.Unmap()
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	reason := ""
	switch {
	case a == metadataV4 || a == metadataV6:
		reason = "cloud metadata service"
	case a.IsLoopback():
		reason = "loopback"
	case a.IsPrivate():
		reason = "private network" // 10/8, 172.16/12, 192.168/16, fc00::/7 (unique local)
	case a.IsLinkLocalUnicast():
		reason = "link-local"
	case a.IsUnspecified(), thisNetwork.Contains(a):
		reason = "unspecified"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		reason = "multicast"
	case sharedSpace.Contains(a):
		reason = "shared address space"
	case ietfProtocol.Contains(a), benchmarking.Contains(a):
		reason = "special-purpose range"
	default:
		return nil
	}
	return &AddressError{Addr: a, Reason: reason}
}

// controlAddress is a net.Dialer Control: it runs after resolution, on the
// address about to be connected to.
func controlAddress(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook: cannot judge the address %q: %w", address, err)
	}
	return CheckAddr(ap.Addr())
}

// URLError is a destination URL that subscriptions refuse.
type URLError struct{ Reason string }

func (e *URLError) Error() string { return "url " + e.Reason }

// MinURLBytes and MaxURLBytes bound a destination URL (the table's CHECK
// holds the same bounds).
const (
	MinURLBytes = 10
	MaxURLBytes = 2048
)

// CheckURL checks a destination URL: absolute, https (or http when
// allowHTTP) written in lower case, a host, no user name or password, no
// fragment, MinURLBytes to MaxURLBytes; an IP literal is judged by
// CheckAddr unless allowPrivate. Names are judged when dialled, on what
// they resolve to then.
func CheckURL(raw string, allowHTTP, allowPrivate bool) error {
	if len(raw) > MaxURLBytes {
		return &URLError{Reason: fmt.Sprintf("is longer than %d bytes", MaxURLBytes)}
	}
	if len(raw) < MinURLBytes {
		return &URLError{Reason: fmt.Sprintf("is shorter than %d bytes", MinURLBytes)}
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" {
		return &URLError{Reason: "must be an absolute https:// URL"}
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP {
			return &URLError{Reason: "must be https (http:// needs webhooks.allow_http)"}
		}
	default:
		return &URLError{Reason: fmt.Sprintf("must be https, got scheme %q", u.Scheme)}
	}
	if u.Hostname() == "" {
		return &URLError{Reason: "has no host"}
	}
	if !strings.HasPrefix(raw, u.Scheme+"://") {
		// url.Parse lowers the scheme; the stored URL keeps what was sent.
		return &URLError{Reason: "must start with " + u.Scheme + ":// in lower case"}
	}
	if u.User != nil {
		return &URLError{Reason: "must not carry a user name or password (the signature authenticates sweeper)"}
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return &URLError{Reason: "must not have a #fragment"}
	}
	if strings.ContainsAny(raw, " \t\r\n\x00") {
		return &URLError{Reason: "must not contain spaces or control characters"}
	}
	if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !allowPrivate {
		if err := CheckAddr(a); err != nil {
			return &URLError{Reason: "names " + err.(*AddressError).Addr.String() + " (" + err.(*AddressError).Reason + "), which webhooks.allow_private_networks does not allow"}
		}
	}
	return nil
}

// ResponseKeepBytes is how much of a response body is kept in the attempts
// log.
const ResponseKeepBytes = 1024

// errRedirect is returned for a 3xx: deliveries follow no redirect.
var errRedirect = errors.New("redirect not followed")

// newClient is the HTTP client of deliveries: no proxy (a proxy would dial
// for us, past the address check), no redirects, the address check at dial
// time unless allowPrivate, a timeout per delivery, and up to conns idle
// connections kept per host (as many as the deliveries it makes at once,
// so that none is dialled again for the next page).
func newClient(timeout time.Duration, allowPrivate bool, resolver *net.Resolver, conns int) *http.Client {
	d := &net.Dialer{Timeout: min(timeout, 10*time.Second), KeepAlive: 30 * time.Second, Resolver: resolver}
	if !allowPrivate {
		d.Control = controlAddress
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           max(100, conns),
		MaxIdleConnsPerHost:    conns,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    min(timeout, 10*time.Second),
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
