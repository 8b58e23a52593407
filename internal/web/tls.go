package web

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// certLoader serves the certificate in certFile/keyFile and loads it again
// when either file changes (size or modification time), so that a renewed
// certificate is used without a restart. A renewal that does not load
// (half-written files, a key that does not match) keeps the previous
// certificate and is logged once.
type certLoader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   fileStamp
	badSeen fileStamp // the stamp whose load failed, logged once
}

type fileStamp struct {
	certSize, keySize int64
	certMod, keyMod   int64 // UnixNano
}

func newCertLoader(certFile, keyFile string, log *slog.Logger) (*certLoader, error) {
	l := &certLoader{certFile: certFile, keyFile: keyFile, log: log}
	st, err := l.statFiles()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls certificate %s and key %s: %w", certFile, keyFile, err)
	}
	l.cert, l.stamp = &cert, st
	return l, nil
}

func (l *certLoader) statFiles() (fileStamp, error) {
	c, err := os.Stat(l.certFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("tls.cert: %w", err)
	}
	k, err := os.Stat(l.keyFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("tls.key: %w", err)
	}
	return fileStamp{certSize: c.Size(), keySize: k.Size(), certMod: c.ModTime().UnixNano(), keyMod: k.ModTime().UnixNano()}, nil
}

// get is tls.Config.GetCertificate.
func (l *certLoader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, err := l.statFiles()
	if err != nil || st == l.stamp || st == l.badSeen {
		return l.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(l.certFile, l.keyFile)
	if err != nil {
		l.badSeen = st
		l.log.Warn("tls certificate changed but does not load; still serving the previous one", "cert", l.certFile, "key", l.keyFile, "err", err)
		return l.cert, nil
	}
	l.cert, l.stamp, l.badSeen = &cert, st, fileStamp{}
	l.log.Info("tls certificate reloaded", "cert", l.certFile)
	return l.cert, nil
}
