package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
)

// The web console's subprotocol, "console.zun-wsproxy.v1", splits the two
// directions of meaning by frame type so that keystrokes can never be
// mistaken for commands: binary messages carry terminal bytes both ways,
// and text messages from the client carry one JSON control object each:
//
//	{"type":"resize","rows":24,"cols":80}
//
// Each in one frame of at most 256 bytes. Anything else, unknown types
// included, is refused (close 1007), to keep the format extensible
// without silent misreadings.
const ConsoleSubprotocol = "console.zun-wsproxy.v1"

// maxControl bounds a control message.
const maxControl = 256

// Control is a parsed control message.
type Control struct {
	Type string `json:"type"`
	Rows int    `json:"rows"`
	Cols int    `json:"cols"`
}

// ParseControl parses and checks a control message.
func ParseControl(p []byte) (Control, error) {
	var c Control
	if err := json.Unmarshal(p, &c); err != nil {
		return Control{}, errors.New("control message is not a JSON object")
	}
	switch c.Type {
	case "resize":
		if c.Rows < 1 || c.Rows > 1000 || c.Cols < 1 || c.Cols > 1000 {
			return Control{}, fmt.Errorf("resize to %dx%d is out of range (1-1000)", c.Rows, c.Cols)
		}
		return c, nil
	}
	return Control{}, fmt.Errorf("unknown control message type %q", c.Type)
}
