package admin

import (
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"testing"
)

// The token check is timing-safe by construction: it compares digests
// with crypto/subtle, and its loop over the tokens never returns early
// (which would tell, by the time taken, which entry matched). Time itself
// is not measured: on a shared machine that cannot be told apart from
// noise, and a test must not assert wall-clock times.
func TestTokenCheckIsConstantTime(t *testing.T) {
	f, err := parser.ParseFile(gotoken.NewFileSet(), "tokens.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var check *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "check" && fd.Recv != nil {
			check = fd
		}
	}
	if check == nil {
		t.Fatal("no (*Tokens).check in tokens.go")
	}
	var compares, sums, earlyReturns int
	ast.Inspect(check.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok {
				switch {
				case id.Name == "subtle" && n.Sel.Name == "ConstantTimeCompare":
					compares++
				case id.Name == "sha256" && n.Sel.Name == "Sum256":
					sums++
				}
			}
		case *ast.RangeStmt:
			ast.Inspect(n.Body, func(m ast.Node) bool {
				if _, ok := m.(*ast.ReturnStmt); ok {
					earlyReturns++
				}
				if _, ok := m.(*ast.BranchStmt); ok {
					earlyReturns++
				}
				return true
			})
		}
		return true
	})
	if compares != 1 || sums != 1 || earlyReturns != 0 {
		t.Errorf("check: %d subtle.ConstantTimeCompare, %d sha256.Sum256, %d returns or breaks in its loop; want 1, 1, 0", compares, sums, earlyReturns)
	}
}
