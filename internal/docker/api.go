package docker

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
	"strings"
	"time"

	"github.com/zun-wsproxy/zun-wsproxy/internal/console"
)

// ErrNoSuchContainer: Docker does not know the container.
var ErrNoSuchContainer = errors.New("no such container")

// ContainerInfo is what the proxy needs of docker inspect.
type ContainerInfo struct {
	ID      string
	Name    string
	Running bool
	Tty     bool
}

// call sends one Engine API request to endpoint (tcp://, unix://, http://,
// https://) and decodes a JSON answer into out. It returns the HTTP status.
func (d *Dialer) call(ctx context.Context, endpoint, method, path string, body, out any) (int, error) {
	network, addr, useTLS, host, err := d.apiEndpoint(endpoint)
	if err != nil {
		return 0, fmt.Errorf("docker url %q: %w", endpoint, err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	client := d.apiClient(endpoint, network, addr, useTLS, host)
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker/v"+d.opts.APIVersion+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("docker %s: %w", addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("docker %s: %w", addr, err)
	}
	if resp.StatusCode >= 300 {
		var msg struct{ Message string }
		json.Unmarshal(data, &msg)
		return resp.StatusCode, fmt.Errorf("docker %s %s: %s: %s", method, path, resp.Status, msg.Message)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("docker %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// apiClient returns the HTTP client of an Engine API endpoint. It keeps a
// few connections open between calls (Docker keeps them alive too), so a
// session's inspect does not pay for a new connection, or a TLS handshake.
func (d *Dialer) apiClient(endpoint, network, addr string, useTLS bool, host string) *http.Client {
	d.apiMu.Lock()
	defer d.apiMu.Unlock()
	if c, ok := d.api[endpoint]; ok {
		return c
	}
	if d.api == nil {
		d.api = make(map[string]*http.Client)
	}
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.connect(ctx, &d.net, network, addr, useTLS, host)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}}
	d.api[endpoint] = c
	return c
}

// CloseIdle closes the Engine API connections kept open between calls.
func (d *Dialer) CloseIdle() {
	d.apiMu.Lock()
	defer d.apiMu.Unlock()
	for _, c := range d.api {
		c.CloseIdleConnections()
	}
}

// Inspect looks a container up by name or id.
func (d *Dialer) Inspect(ctx context.Context, endpoint, ref string) (ContainerInfo, error) {
	var info struct {
		ID     string `json:"Id"`
		Name   string
		State  struct{ Running bool }
		Config struct{ Tty bool }
	}
	code, err := d.call(ctx, endpoint, "GET", "/containers/"+url.PathEscape(ref)+"/json", nil, &info)
	if code == http.StatusNotFound {
		return ContainerInfo{}, fmt.Errorf("container %q: %w", ref, ErrNoSuchContainer)
	}
	if err != nil {
		return ContainerInfo{}, err
	}
	return ContainerInfo{ID: info.ID, Name: strings.TrimPrefix(info.Name, "/"), Running: info.State.Running, Tty: info.Config.Tty}, nil
}

// CreateExec creates (without starting) an interactive exec of cmd with a
// terminal, as Zun's execute?interactive=true does.
func (d *Dialer) CreateExec(ctx context.Context, endpoint, containerID string, cmd []string) (string, error) {
	var created struct {
		ID string `json:"Id"`
	}
	spec := map[string]any{"Cmd": cmd, "Tty": true, "AttachStdin": true, "AttachStdout": true, "AttachStderr": true}
	if _, err := d.call(ctx, endpoint, "POST", "/containers/"+url.PathEscape(containerID)+"/exec", spec, &created); err != nil {
		return "", err
	}
	return created.ID, nil
}

// Resize sets the terminal size of a container (attach) or exec.
func (d *Dialer) Resize(ctx context.Context, t console.Target, rows, cols int) error {
	path := fmt.Sprintf("/containers/%s/resize?h=%d&w=%d", url.PathEscape(t.ContainerID), rows, cols)
	if t.Kind == console.Exec {
		path = fmt.Sprintf("/exec/%s/resize?h=%d&w=%d", url.PathEscape(t.ExecID), rows, cols)
	}
	_, err := d.call(ctx, apiURL(t), "POST", path, nil, nil)
	return err
}

// apiURL is the Engine API URL of a target: its URL, or for a Zun attach
// target (Docker's attach WebSocket URL) the API on the same host.
func apiURL(t console.Target) string {
	u, err := url.Parse(t.URL)
	if err != nil {
		return t.URL
	}
	switch u.Scheme {
	case "ws":
		return "tcp://" + u.Host
	case "wss":
		return "https://" + u.Host
	}
	return t.URL
}

// Ping checks that the Engine API at endpoint answers.
func (d *Dialer) Ping(ctx context.Context, endpoint string) error {
	_, err := d.call(ctx, endpoint, "GET", "/_ping", nil, nil)
	return err
}
