package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer answers A and AAAA questions from names over UDP on loopback:
// a resolver that makes any name resolve to any address, with no
// /etc/hosts entry.
func dnsServer(t *testing.T, names map[string][]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.EnableCompression()
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
			for _, a := range names[strings.TrimSuffix(q.Name.String(), ".")] {
				switch {
				case q.Type == dnsmessage.TypeA && a.Is4():
					_ = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
				case q.Type == dnsmessage.TypeAAAA && a.Is6():
					_ = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
				}
			}
			msg, err := b.Finish()
			if err == nil {
				_, _ = pc.WriteTo(msg, from)
			}
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// Names that resolve to loopback, metadata, private and IPv4-mapped
// addresses are refused when dialled, by the check on the address about
// to be connected to; with allowPrivate the same name reaches the server
// listening there, so the refusal is the check's, not the resolver's.
func TestDialRefusesPrivateAddressesOfNames(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("reached")) }))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	names := map[string][]netip.Addr{
		"loopback.test":   {netip.MustParseAddr("127.0.0.1")},
		"metadata.test":   {netip.MustParseAddr("169.254.169.254")},
		"ten.test":        {netip.MustParseAddr("10.20.30.40")},
		"ipv6-local.test": {netip.MustParseAddr("::1")},
		"mapped.test":     {netip.MustParseAddr("::ffff:127.0.0.1")},
		"ec2v6.test":      {netip.MustParseAddr("fd00:ec2::254")},
		"cgnat.test":      {netip.MustParseAddr("100.100.100.200")},
		"nat64.test":      {netip.MustParseAddr("64:ff9b::a9fe:a9fe")},
	}
	resolver := dnsServer(t, names)
	refusing := newClient(2*time.Second, false, resolver, MaxInFlightDefault)
	for name, addrs := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			resp, err := refusing.Get("http://" + name + ":" + port + "/")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s (%v) was reached", name, addrs)
			}
			var ae *AddressError
			if !errors.As(err, &ae) {
				t.Fatalf("%s: want an AddressError, got %v", name, err)
			}
		})
	}
	t.Run("allowed", func(t *testing.T) {
		t.Parallel()
		allowing := newClient(2*time.Second, true, resolver, MaxInFlightDefault)
		resp, err := allowing.Get("http://loopback.test:" + port + "/")
		if err != nil {
			t.Fatalf("with private networks allowed: %v", err)
		}
		resp.Body.Close()
		// An IP literal goes through the same check.
		if _, err := refusing.Get(srv.URL); !errors.As(err, new(*AddressError)) {
			t.Fatalf("literal loopback address: %v", err)
		}
	})
}

func TestCheckAddr(t *testing.T) {
	t.Parallel()
	for _, a := range []string{"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"} {
		if err := CheckAddr(netip.MustParseAddr(a)); err != nil {
			t.Errorf("%s refused: %v", a, err)
		}
	}
	for _, a := range []string{"127.0.0.1", "127.9.9.9", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
		"169.254.1.1", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
		"0.0.0.0", "::", "100.64.0.1", "224.0.0.1", "ff02::1", "64:ff9b::7f00:1"} {
		if err := CheckAddr(netip.MustParseAddr(a)); err == nil {
			t.Errorf("%s allowed", a)
		}
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url                     string
		allowHTTP, allowPrivate bool
		want                    string // "" for accepted
	}{
		{"https://hooks.example.com/sweeper", false, false, ""},
		{"http://hooks.example.com/sweeper", false, false, "must be https"},
		{"http://hooks.example.com/sweeper", true, false, ""},
		{"ftp://hooks.example.com/", true, false, "must be https"},
		{"/relative/hooks", false, false, "absolute"},
		{"https://user:pw@hooks.example.com/", false, false, "user name or password"},
		{"https://hooks.example.com/#frag", false, false, "fragment"},
		{"https://127.0.0.1/x", false, false, "loopback"},
		{"https://[::1]/x", false, false, "loopback"},
		{"https://169.254.169.254/latest/meta-data", false, false, "metadata"},
		{"https://127.0.0.1/x", false, true, ""},
		{"https://" + strings.Repeat("a", 2048) + ".com/", false, false, "longer than"},
		{"https://a", false, false, "shorter than 10 bytes"},
		{"https://ab", false, false, ""},
		{"HTTPS://hooks.example.com/", false, false, "lower case"},
		{"Http://hooks.example.com/", true, false, "lower case"},
	} {
		err := CheckURL(c.url, c.allowHTTP, c.allowPrivate)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckURL(%.60q) = %v, want %q", c.url, err, c.want)
		}
	}
}
