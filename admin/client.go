package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// The settings the command line reads, as the server does (the server's
// own settings, so that on its host `imapgate admin` needs nothing more).
const (
	EnvURL           = "IMAPGATE_ADMIN_URL"
	EnvToken         = "IMAPGATE_ADMIN_TOKEN"
	EnvListen        = "IMAPGATE_ADMIN_LISTEN"
	EnvMetricsListen = "IMAPGATE_METRICS_LISTEN"
)

// Client talks to an admin API.
type Client struct {
	// URL is the API's base: scheme, host and port (http://127.0.0.1:9181).
	URL string
	// Token is presented as the bearer token.
	Token string
	// HTTP is the client used; nil means one with a 10 s timeout.
	HTTP *http.Client
}

// DefaultURL is the API's base URL from the environment: IMAPGATE_ADMIN_URL,
// else the address the server listens on for it (IMAPGATE_ADMIN_LISTEN,
// else IMAPGATE_METRICS_LISTEN), with 127.0.0.1 for an address that is
// every interface.
func DefaultURL(getenv func(string) string) (string, error) {
	if u := getenv(EnvURL); u != "" {
		return strings.TrimSuffix(u, "/"), nil
	}
	addr := getenv(EnvListen)
	if addr == "" {
		addr = getenv(EnvMetricsListen)
	}
	if addr == "" {
		return "", fmt.Errorf("where is the admin API? set %s (or %s or %s, as the server has them)", EnvURL, EnvListen, EnvMetricsListen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s: %v", EnvListen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// TokenFromEnv is the token to present: IMAPGATE_ADMIN_TOKEN, or the file
// IMAPGATE_ADMIN_TOKEN_FILE names (one trailing line end dropped), as the
// server reads it; the first of a list.
func TokenFromEnv(getenv func(string) string) (string, error) {
	tok, path := getenv(EnvToken), getenv(EnvToken+"_FILE")
	switch {
	case tok != "" && path != "":
		return "", fmt.Errorf("set both %s and %s_FILE; set one", EnvToken, EnvToken)
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: %v", EnvToken, err)
		}
		tok = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	case tok == "":
		return "", fmt.Errorf("no token: set %s (or %s_FILE)", EnvToken, EnvToken)
	}
	return ClientToken(tok), nil
}

// call sends one request (a POST of body when it is not nil, else a GET
// with query) and decodes the answer into reply. An answer that is not
// 200 is an error "CODE STATUS: the API's message".
func (c *Client) call(ctx context.Context, path string, query url.Values, body, reply any) error {
	method, rd := http.MethodGet, io.Reader(nil)
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		method, rd = http.MethodPost, bytes.NewReader(b)
	}
	u := c.URL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach %s: %v", c.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s: %v", c.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorReply
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	if err := json.Unmarshal(b, reply); err != nil {
		return fmt.Errorf("%s: the answer is not the API's: %v", c.URL, err)
	}
	return nil
}

func (c *Client) client() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 10 * time.Second}
}
