package testutil

import (
	"bufio"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"
)

// TestMain checks that the helpers' goroutines end with the tests.
func TestMain(m *testing.M) { os.Exit(CheckLeaks(m)) }

func TestCAIssue(t *testing.T) {
	ca := NewCA(t, "test CA")
	leaf := ca.Issue(t, 42, "broker.local", x509.ExtKeyUsageServerAuth)
	cert, err := x509.ParseCertificate(leaf.DER)
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), DNSName: "broker.local", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := cert.Verify(opts); err != nil {
		t.Fatalf("leaf does not verify against its CA: %v", err)
	}
	opts.Roots = NewCA(t, "other CA").Pool()
	if _, err := cert.Verify(opts); err == nil {
		t.Fatal("leaf verifies against another CA")
	}
	if cert.SerialNumber.Int64() != 42 {
		t.Errorf("serial %d, want 42", cert.SerialNumber.Int64())
	}
	if tc := leaf.TLS(); len(tc.Certificate) != 1 || tc.PrivateKey == nil || len(leaf.CertPEM) == 0 || len(leaf.KeyPEM) == 0 {
		t.Error("TLS or PEM form missing")
	}
}

// TestProxy forwards a line and its echo; after Cut the client's
// connection is closed; with DropReplies the request arrives but no reply.
func TestProxy(t *testing.T) {
	got := make(chan string, 10)
	echo := ServeTCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			got <- line
			c.Write([]byte(line))
		}
	})
	p := NewProxy(t, echo)
	t.Cleanup(p.Close)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.Write([]byte("one\n"))
	if line, err := r.ReadString('\n'); err != nil || line != "one\n" {
		t.Fatalf("echo through the proxy: %q, %v", line, err)
	}
	<-got
	p.DropReplies.Store(true)
	c.Write([]byte("two\n"))
	select {
	case line := <-got:
		if line != "two\n" {
			t.Fatalf("server got %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request did not reach the server")
	}
	p.Cut()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("read %q after Cut (a dropped reply, or the connection still open)", line)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection still open after Cut")
	}
}

func TestFreeAddrIsFree(t *testing.T) {
	l, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatalf("listen on FreeAddr: %v", err)
	}
	l.Close()
}
