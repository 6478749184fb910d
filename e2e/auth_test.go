package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/jetpost/jetpost/internal/natstest"
	"github.com/jetpost/jetpost/internal/target"
)

// Both commands authenticate with the JETPOST_NATS_* variables: a batch
// completes against servers that require each kind of credential, and a
// wrong credential is refused with a clear error.
func TestNATSAuthentication(t *testing.T) {
	tg := target.New(target.Options{})
	srv := httptest.NewServer(tg)
	defer srv.Close()
	dir := t.TempDir()

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	ca, serverCert, clientCert := writeTLSFiles(t, dir)
	tlsCfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: serverCert[0], KeyFile: serverCert[1], CaFile: ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}

	credsOpts, credsFile, strangerCreds := operatorMode(t, dir)

	cases := []struct {
		name string
		opts *server.Options
		env  []string
		bad  []string
		tls  bool
	}{
		{"user-password", &server.Options{Username: "jet", Password: "p4ss"},
			[]string{"JETPOST_NATS_USER=jet", "JETPOST_NATS_PASSWORD=p4ss"}, []string{"JETPOST_NATS_USER=jet", "JETPOST_NATS_PASSWORD=wrong"}, false},
		{"token", &server.Options{Authorization: "t0ken"},
			[]string{"JETPOST_NATS_TOKEN=t0ken"}, []string{"JETPOST_NATS_TOKEN=nope"}, false},
		{"nkey", &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}},
			[]string{"JETPOST_NATS_NKEY_FILE=" + seedFile}, nil, false},
		{"creds-file", credsOpts,
			[]string{"JETPOST_NATS_CREDS_FILE=" + credsFile}, []string{"JETPOST_NATS_CREDS_FILE=" + strangerCreds}, false},
		{"mutual-tls", &server.Options{TLSConfig: tlsCfg, TLSVerify: true, TLS: true},
			[]string{"JETPOST_NATS_TLS_CA=" + ca, "JETPOST_NATS_TLS_CERT=" + clientCert[0], "JETPOST_NATS_TLS_KEY=" + clientCert[1]},
			[]string{"JETPOST_NATS_TLS_CA=" + ca}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.RunServerWith(t, tc.opts)
			url := ns.ClientURL()
			if tc.tls {
				url = strings.Replace(url, "nats://", "tls://", 1)
			}
			w := start(t, "worker", workerEnv(url, tc.env...))
			w.waitLine("consuming jobs")
			file := writeJobs(t, 10, srv.URL)
			out := filepath.Join(t.TempDir(), "out.jsonl")
			code, _, stderr := runEnqueue(t, tc.env, "--nats", url, "--wait", "--out", out, file)
			if code != 0 {
				t.Fatalf("enqueue exit %d: %s", code, stderr)
			}
			if n := len(readResults(t, out)); n != 10 {
				t.Errorf("%d results, want 10", n)
			}
			if tc.bad != nil {
				code, _, stderr := runEnqueue(t, tc.bad, "--nats", url, file)
				if code != 3 || !strings.Contains(stderr, "connecting to NATS") {
					t.Errorf("bad credentials: exit %d, stderr %s", code, stderr)
				}
			}
		})
	}
}

// operatorMode makes the decentralised (JWT) setup a creds file belongs to,
// as nsc would: an operator, an account with JetStream allowed, signed by
// the operator, and a user of that account. It returns the server options
// that trust the operator and know the account, the user's creds file, and
// the creds file of a user of an account the server does not know.
func operatorMode(t *testing.T, dir string) (*server.Options, string, string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "jetpost-test"
	_, err = oc.Encode(okp)
	must(err)

	resolver := &server.MemAccResolver{}
	credsFor := func(name string, known bool) string {
		akp, err := nkeys.CreateAccount()
		must(err)
		apub, _ := akp.PublicKey()
		ac := jwt.NewAccountClaims(apub)
		ac.Name = name
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		ajwt, err := ac.Encode(okp)
		must(err)
		if known {
			must(resolver.Store(apub, ajwt))
		}
		ukp, err := nkeys.CreateUser()
		must(err)
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		uc.Name = name + "-worker"
		ujwt, err := uc.Encode(akp)
		must(err)
		seed, _ := ukp.Seed()
		creds, err := jwt.FormatUserConfig(ujwt, seed)
		must(err)
		path := filepath.Join(dir, name+".creds")
		must(os.WriteFile(path, creds, 0o600))
		return path
	}
	good, stranger := credsFor("jobs", true), credsFor("stranger", false)
	// JetStream in operator mode wants a system account.
	skp, err := nkeys.CreateAccount()
	must(err)
	spub, _ := skp.PublicKey()
	sc := jwt.NewAccountClaims(spub)
	sc.Name = "SYS"
	sjwt, err := sc.Encode(okp)
	must(err)
	must(resolver.Store(spub, sjwt))
	return &server.Options{TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: resolver, SystemAccount: spub}, good, stranger
}

// writeTLSFiles makes a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files; it returns the CA path and [cert, key] pairs.
func writeTLSFiles(t *testing.T, dir string) (string, [2]string, [2]string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jetpost test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	caPath := filepath.Join(dir, "ca.pem")
	writePEM(t, caPath, "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) [2]string {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		cert, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, cert, "CERTIFICATE", der)
		writePEM(t, keyPath, "EC PRIVATE KEY", keyDER)
		return [2]string{cert, keyPath}
	}
	return caPath, issue("server", 2, x509.ExtKeyUsageServerAuth), issue("client", 3, x509.ExtKeyUsageClientAuth)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
