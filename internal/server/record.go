package server

import (
	"errors"

	"github.com/zun-wsproxy/zun-wsproxy/internal/proxy"
	"github.com/zun-wsproxy/zun-wsproxy/internal/recording"
	"github.com/zun-wsproxy/zun-wsproxy/internal/websocket"
)

// Why a recorded session ended because of its recording (the metrics'
// and the audit log's end_reason).
const (
	endRecordingLimit  = "recording_limit"  // [recording] max_size reached
	endRecordingFailed = "recording_failed" // the file could not be written
)

// recordingTap is a session's recording as its proxy.Tap. A session that
// should be recorded does not go on unrecorded: when the recording cannot
// take what the session would forward, the session ends there, and that
// data is not forwarded. Reaching max_size is a policy (1008); a write
// that fails, on a full disk say, is the proxy's failure (1011).
type recordingTap struct{ r *recording.Recorder }

func (t recordingTap) Output(p []byte) error       { return tapError(t.r.Output(p)) }
func (t recordingTap) Input(p []byte) error        { return tapError(t.r.Input(p)) }
func (t recordingTap) Resize(rows, cols int) error { return tapError(t.r.Resize(rows, cols)) }

func tapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, recording.ErrLimit):
		return &proxy.TapError{Code: websocket.ClosePolicyViolation, Reason: "recording size limit reached", End: endRecordingLimit, Err: err}
	}
	return &proxy.TapError{Code: websocket.CloseInternalError, Reason: "session recording failed", End: endRecordingFailed, Err: err}
}
