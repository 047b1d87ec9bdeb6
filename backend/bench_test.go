package backend

// Benchmarks of backend selection, with allocation counts:
//
//	go test -run '^$' -bench . -benchmem ./backend

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchSelectors returns the three rules of a typical setup: a users file
// of n users (every other one naming a backend), the PHP seed's first-letter
// rule and a default, each alone and chained.
func benchSelectors(b *testing.B, n int) (*UsersFile, FirstLetter, Chain) {
	b.Helper()
	backends, err := ParseBackends("mailhost01=192.0.2.22;mailhost02=192.0.2.33;cyrus=imap://192.0.2.44:9143", Ports{}, false)
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	for i := range n {
		if i%2 == 0 {
			fmt.Fprintf(&sb, "User%06d cyrus\n", i)
		} else {
			fmt.Fprintf(&sb, "user%06d\n", i)
		}
	}
	path := filepath.Join(b.TempDir(), "users")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	uf, err := OpenUsersFile(path, backends, backends["cyrus"], nil)
	if err != nil {
		b.Fatal(err)
	}
	fl, err := ParseFirstLetter("acfg=mailhost01", backends)
	if err != nil {
		b.Fatal(err)
	}
	return uf, fl, Chain{{RuleUsersFile, uf}, {RuleFirstLetter, fl}, {RuleDefault, Static{Backend: backends["mailhost02"]}}}
}

func BenchmarkSelect(b *testing.B) {
	uf, fl, chain := benchSelectors(b, 10_000)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		sel  Selector
		user string
	}{
		{"FirstLetter", fl, "alice"},
		{"FirstLetter non-ASCII", fl, "Ärger"},
		{"UsersFile hit", uf, "user004711"},
		{"UsersFile hit, other case", uf, "USER004711"},
		{"UsersFile miss", uf, "alice"},
		{"Chain users file", chain, "user004711"},
		{"Chain first letter", chain, "alice"},
		{"Chain default", chain, "zoe"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.sel.Select(ctx, bc.user)
			}
		})
	}
}
