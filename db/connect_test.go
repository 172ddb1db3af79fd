package db

import (
	"strings"
	"testing"
)

func TestParseURLNeverQuotesThePassword(t *testing.T) {
	for _, url := range []string{
		"postgres://app:s3cretPass@db.example.com:notaport/app",
		"postgres://app:s3cretPass@db.example.com:5432/app?sslmode=bogus",
		"postgres://app:s3cretPass@[::1/app",
		"host=db password=s3cretPass port=notaport",
		"postgres://app:s3cret%zzPass@db/app",
	} {
		_, err := ParseURL(url)
		if err == nil {
			t.Errorf("ParseURL(%q) accepted a broken URL", url)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "DATABASE_URL") {
			t.Errorf("error %q does not name DATABASE_URL", msg)
		}
		if strings.Contains(msg, "s3cret") || strings.Contains(msg, "Pass") {
			t.Errorf("error %q leaks the password", msg)
		}
	}
}

func TestParseURLAcceptsWhatPgxAccepts(t *testing.T) {
	cfg, err := ParseURL("postgres://app:pw@localhost:5432/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if got := Describe(cfg); got != "app@localhost:5432/app" {
		t.Errorf("Describe = %q", got)
	}
}
