package testpeer

import (
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Operator is a NATS operator for tests of JWT authentication (operator
// mode): it signs a system account, an account with JetStream, and users
// of that account, as `nsc` would. A server started with its Options
// trusts it and resolves both accounts from memory.
type Operator struct {
	kp, sysKP, accKP nkeys.KeyPair
	claims           *jwt.OperatorClaims
	sysPub, sysJWT   string
	accPub, accJWT   string
}

// NewOperator makes the operator and its two accounts.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	o := &Operator{kp: mustKey(t, nkeys.CreateOperator)}
	opPub, _ := o.kp.PublicKey()
	o.claims = jwt.NewOperatorClaims(opPub)
	o.claims.Name = "ferry-test"
	// The claims are signed so that the server validates them as it
	// would a file from nsc.
	if _, err := o.claims.Encode(o.kp); err != nil {
		t.Fatal(err)
	}
	o.sysKP, o.sysPub, o.sysJWT = o.account(t, "SYS", false)
	o.accKP, o.accPub, o.accJWT = o.account(t, "FERRY", true)
	return o
}

func (o *Operator) account(t testing.TB, name string, js bool) (nkeys.KeyPair, string, string) {
	t.Helper()
	kp := mustKey(t, nkeys.CreateAccount)
	pub, _ := kp.PublicKey()
	ac := jwt.NewAccountClaims(pub)
	ac.Name = name
	if js {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	}
	s, err := ac.Encode(o.kp)
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub, s
}

// Options is a mod for NATS that puts the server in operator mode with
// this operator, its system account, and a memory resolver that knows
// both accounts.
func (o *Operator) Options(t testing.TB) func(*server.Options) {
	t.Helper()
	res := &server.MemAccResolver{}
	if err := res.Store(o.sysPub, o.sysJWT); err != nil {
		t.Fatal(err)
	}
	if err := res.Store(o.accPub, o.accJWT); err != nil {
		t.Fatal(err)
	}
	return func(opts *server.Options) {
		opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
		opts.AccountResolver = res
		opts.SystemAccount = o.sysPub
	}
}

// Account is the public key of the account users are made in.
func (o *Operator) Account() string { return o.accPub }

// Creds returns a credentials file (user JWT and NKey seed) of a new user
// of the account; expires, when not zero, is when the JWT expires (it may
// be in the past).
func (o *Operator) Creds(t testing.TB, name string, expires time.Time) []byte {
	t.Helper()
	return userCreds(t, o.accKP, name, expires)
}

// ForeignCreds returns a well-formed credentials file whose user belongs
// to an account no server of this operator knows: the server refuses it.
func ForeignCreds(t testing.TB, name string) []byte {
	t.Helper()
	return userCreds(t, mustKey(t, nkeys.CreateAccount), name, time.Time{})
}

func userCreds(t testing.TB, acc nkeys.KeyPair, name string, expires time.Time) []byte {
	t.Helper()
	ukp := mustKey(t, nkeys.CreateUser)
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	if !expires.IsZero() {
		uc.Expires = expires.Unix()
	}
	ujwt, err := uc.Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func mustKey(t testing.TB, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
