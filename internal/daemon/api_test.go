package daemon_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/tasksweeper/sweeper/internal/auth"
	"github.com/tasksweeper/sweeper/internal/config"
	"github.com/tasksweeper/sweeper/internal/daemon"
	"github.com/tasksweeper/sweeper/internal/testdb"
)

// pki is a throwaway CA with one server and one client certificate.
type pki struct {
	caPool                    *x509.CertPool
	caFile, certFile, keyFile string
	client                    tls.Certificate
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srvDER, srvKey := leaf(2, x509.ExtKeyUsageServerAuth)
	srvKeyDER, _ := x509.MarshalECPrivateKey(srvKey)
	cliDER, cliKey := leaf(3, x509.ExtKeyUsageClientAuth)
	p := pki{caPool: x509.NewCertPool(),
		caFile: write("ca.pem", "CERTIFICATE", caDER), certFile: write("server.pem", "CERTIFICATE", srvDER),
		keyFile: write("server.key", "EC PRIVATE KEY", srvKeyDER),
		client:  tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}}
	p.caPool.AddCert(ca)
	return p
}

// The API over TLS with client certificates: no certificate, no
// connection; a certificate and a token, an answer.
func TestAPIServesMutualTLS(t *testing.T) {
	db := testdb.New(t)
	ctx := context.Background()
	tok, err := auth.NewStore(db.Pool).Create(ctx, "reader", auth.RoleReader, "")
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t)
	cfg := config.Default()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.API.TLSCertFile, cfg.API.TLSKeyFile, cfg.API.ClientCAFile = p.certFile, p.keyFile, p.caFile
	s, err := daemon.StartAPI(ctx, cfg, db.Pool, prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	get := func(certs []tls.Certificate) (int, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.caPool, Certificates: certs}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", "https://"+s.Addr()+"/v1/summary", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	if code, err := get(nil); err == nil {
		t.Fatalf("without a client certificate: %d", code)
	}
	if code, err := get([]tls.Certificate{p.client}); err != nil || code != 200 {
		t.Fatalf("with a client certificate: %d, %v", code, err)
	}
	// Plain HTTP to the TLS port gets no answer from the API.
	res, err := http.Get("http://" + s.Addr() + "/v1/summary")
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP on the TLS port: %d", res.StatusCode)
		}
	}
}

func TestStartAPIRefusesBadConfiguration(t *testing.T) {
	db := testdb.New(t)
	p := newPKI(t)
	for _, c := range []struct {
		set func(*config.APIConfig)
		key string
	}{
		{func(a *config.APIConfig) { a.TLSCertFile = p.certFile }, "api.tls_key_file"},
		{func(a *config.APIConfig) { a.TLSKeyFile = p.keyFile }, "api.tls_cert_file"},
		{func(a *config.APIConfig) { a.TLSCertFile, a.TLSKeyFile = p.keyFile, p.certFile }, "api.tls_cert_file"},
		{func(a *config.APIConfig) { a.ClientCAFile = p.caFile }, "api.client_ca_file"},
		{func(a *config.APIConfig) {
			a.TLSCertFile, a.TLSKeyFile, a.ClientCAFile = p.certFile, p.keyFile, p.keyFile
		}, "api.client_ca_file"},
		{func(a *config.APIConfig) { a.WriteTimeout = a.MaxWait }, "api.write_timeout"},
	} {
		cfg := config.Default()
		cfg.API.Listen = "127.0.0.1:0"
		c.set(&cfg.API)
		s, err := daemon.StartAPI(context.Background(), cfg, db.Pool, nil, zaptest.NewLogger(t))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != c.key {
			_ = s.Shutdown(context.Background())
			t.Errorf("want a %s error, got %v", c.key, err)
		}
	}
	// api.listen "" serves nothing.
	if s, err := daemon.StartAPI(context.Background(), config.Default(), db.Pool, nil, zaptest.NewLogger(t)); s != nil || err != nil {
		t.Fatalf("disabled API: %v, %v", s, err)
	}
}
