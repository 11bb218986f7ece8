package webpush

// RefusePrivateForTest exposes the dialer's address guard to the tests.
func RefusePrivateForTest(address string) error { return refusePrivate("tcp", address, nil) }
