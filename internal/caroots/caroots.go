// Package caroots loads the certificate authorities a TLS client trusts
// when told to trust a private CA too: parley's --ca-file (the relay) and
// parleyd's --acme-ca-file (the ACME directory).
package caroots

import (
	"crypto/x509"
	"fmt"
	"os"
)

// Load returns the system's certificate authorities plus those in the PEM
// file path (a private CA). A file that cannot be read, or that holds no
// PEM certificate, is an error.
func Load(path string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
