package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/client"
	"github.com/jetflow/jetflow/internal/jsonvalue"
	"github.com/jetflow/jetflow/internal/telemetry"
	"github.com/jetflow/jetflow/messages"
)

// The public API (docs/PROTOCOL.md): start, result and cancel as core NATS requests, each body
// JSON when the request's Content-Type header says application/json, else msgpack; the reply is in
// the request's encoding. It is a thin layer over package client, so a request here does exactly
// what the Go client does.

const (
	contentType = "Content-Type"
	mimeJSON    = "application/json"
	mimeMsgpack = "application/msgpack"
	// maxResultWait bounds how long a result request may ask to wait.
	maxResultWait = 5 * time.Minute
	// maxAPIRequests bounds the requests served at once (result requests may wait).
	maxAPIRequests = 1024
)

// API error types.
const (
	apiBadRequest         = "BadRequest"
	apiNotFound           = "NotFound"
	apiAlreadyEnded       = "AlreadyEnded"
	apiInputTooLarge      = "InputTooLarge"
	apiUnsupportedVersion = "UnsupportedVersion"
	apiInternal           = "Internal"
	apiBusy               = "Busy"
)

type apiError struct {
	Type    string `json:"type" msgpack:"type"`
	Message string `json:"message" msgpack:"message"`
}

// request is what every request carries.
type request interface{ version() int }

type startRequest struct {
	ProtocolVersion int    `json:"protocolVersion" msgpack:"protocolVersion"`
	Function        string `json:"function" msgpack:"function"`
	ExecutionName   string `json:"executionName" msgpack:"executionName"`
	TimeoutMs       int64  `json:"timeoutMs" msgpack:"timeoutMs"`
	// The input as sent: each encoding fills its own field.
	JSONInput    json.RawMessage    `json:"input" msgpack:"-"`
	MsgpackInput msgpack.RawMessage `json:"-" msgpack:"input"`
}

// idReply answers start and cancel.
type idReply struct {
	ProtocolVersion int       `json:"protocolVersion" msgpack:"protocolVersion"`
	ExecutionID     string    `json:"executionId,omitempty" msgpack:"executionId,omitempty"`
	Error           *apiError `json:"error,omitempty" msgpack:"error,omitempty"`
}

type resultRequest struct {
	ProtocolVersion int    `json:"protocolVersion" msgpack:"protocolVersion"`
	ExecutionID     string `json:"executionId" msgpack:"executionId"`
	WaitMs          int64  `json:"waitMs" msgpack:"waitMs"`
}

type resultReply struct {
	ProtocolVersion int       `json:"protocolVersion" msgpack:"protocolVersion"`
	ExecutionID     string    `json:"executionId,omitempty" msgpack:"executionId,omitempty"`
	Function        string    `json:"function,omitempty" msgpack:"function,omitempty"`
	Status          string    `json:"status,omitempty" msgpack:"status,omitempty"`
	Result          any       `json:"result,omitempty" msgpack:"result,omitempty"`
	Error           *apiError `json:"error,omitempty" msgpack:"error,omitempty"`
	CreatedAt       string    `json:"createdAt,omitempty" msgpack:"createdAt,omitempty"`
	EndedAt         string    `json:"endedAt,omitempty" msgpack:"endedAt,omitempty"`
}

type cancelRequest struct {
	ProtocolVersion int    `json:"protocolVersion" msgpack:"protocolVersion"`
	ExecutionID     string `json:"executionId" msgpack:"executionId"`
	Reason          string `json:"reason" msgpack:"reason"`
}

func (r *startRequest) version() int  { return r.ProtocolVersion }
func (r *resultRequest) version() int { return r.ProtocolVersion }
func (r *cancelRequest) version() int { return r.ProtocolVersion }

// api serves the public subjects until stop.
type api struct {
	cl   *client.Client
	subs []*nats.Subscription
	sem  chan struct{}
	wg   sync.WaitGroup
	ctx  context.Context
}

func (c *Coordinator) serveAPI(ctx context.Context) (*api, error) {
	cl, err := client.New(c.nc, client.WithTracerProvider(c.cfg.TracerProvider))
	if err != nil {
		return nil, err
	}
	a := &api{cl: cl, sem: make(chan struct{}, maxAPIRequests), ctx: ctx}
	for subject, h := range map[string]func(context.Context, *nats.Msg, bool) any{
		messages.APIStartSubject:  a.start,
		messages.APIResultSubject: a.result,
		messages.APICancelSubject: a.cancel,
	} {
		sub, err := c.nc.QueueSubscribe(subject, messages.APIQueue, func(m *nats.Msg) { a.serve(m, h) })
		if err != nil {
			a.stop()
			return nil, fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		a.subs = append(a.subs, sub)
	}
	return a, nil
}

func (a *api) stop() {
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	a.wg.Wait()
}

// serve answers one request on a goroutine of its own (a result request may wait).
func (a *api) serve(m *nats.Msg, h func(context.Context, *nats.Msg, bool) any) {
	isJSON := strings.HasPrefix(m.Header.Get(contentType), mimeJSON)
	select {
	case a.sem <- struct{}{}:
	default:
		a.reply(m, isJSON, &idReply{ProtocolVersion: messages.ProtocolVersion,
			Error: &apiError{Type: apiBusy, Message: "too many requests in progress; try again"}})
		return
	}
	a.wg.Go(func() {
		defer func() { <-a.sem }()
		// A caller that sends a W3C traceparent header gets the execution traced under its span.
		a.reply(m, isJSON, h(telemetry.Extract(a.ctx, m.Header), m, isJSON))
	})
}

func (a *api) reply(m *nats.Msg, isJSON bool, v any) {
	if m.Reply == "" {
		return
	}
	out := nats.NewMsg(m.Reply)
	var err error
	if isJSON {
		out.Header.Set(contentType, mimeJSON)
		out.Data, err = json.Marshal(v)
	} else {
		out.Header.Set(contentType, mimeMsgpack)
		out.Data, err = msgpack.Marshal(v)
	}
	if err != nil {
		out.Data, _ = json.Marshal(&idReply{ProtocolVersion: messages.ProtocolVersion,
			Error: &apiError{Type: apiInternal, Message: "cannot encode the reply: " + err.Error()}})
	}
	_ = m.RespondMsg(out)
}

// readRequest decodes a request body into req and checks its protocol version.
func readRequest(what string, data []byte, isJSON bool, req request) *apiError {
	var err error
	switch {
	case len(data) == 0:
		err = errors.New("empty request")
	case isJSON:
		err = json.Unmarshal(data, req)
	default:
		if err = messages.CheckWellFormed(data); err == nil {
			err = msgpack.Unmarshal(data, req)
		}
	}
	if err != nil {
		return &apiError{Type: apiBadRequest, Message: what + ": " + err.Error()}
	}
	if v := req.version(); v > messages.ProtocolVersion {
		return &apiError{Type: apiUnsupportedVersion,
			Message: fmt.Sprintf("protocol version %d; this server speaks up to %d", v, messages.ProtocolVersion)}
	}
	return nil
}

// errorOf maps a client error to an API error.
func errorOf(err error) *apiError {
	t := apiInternal
	switch {
	case errors.Is(err, client.ErrNotFound):
		t = apiNotFound
	case errors.Is(err, client.ErrAlreadyEnded):
		t = apiAlreadyEnded
	case errors.Is(err, client.ErrInputTooLarge):
		t = apiInputTooLarge
	case errors.Is(err, messages.ErrInvalidName):
		t = apiBadRequest
	}
	return &apiError{Type: t, Message: err.Error()}
}

func (a *api) start(ctx context.Context, m *nats.Msg, isJSON bool) any {
	reply := &idReply{ProtocolVersion: messages.ProtocolVersion}
	var req startRequest
	if reply.Error = readRequest("start", m.Data, isJSON, &req); reply.Error != nil {
		return reply
	}
	if req.TimeoutMs < 0 {
		reply.Error = &apiError{Type: apiBadRequest, Message: "start: timeoutMs must not be negative"}
		return reply
	}
	input := []byte(req.MsgpackInput)
	if isJSON {
		var err error
		if input, err = jsonvalue.ToMsgpack(req.JSONInput); err != nil {
			reply.Error = &apiError{Type: apiBadRequest, Message: "start: input: " + err.Error()}
			return reply
		}
	} else if len(input) == 0 {
		input = []byte{0xc0} // nil
	}
	var opts []client.StartOption
	if req.ExecutionName != "" {
		opts = append(opts, client.WithExecutionName(req.ExecutionName))
	}
	if req.TimeoutMs > 0 {
		opts = append(opts, client.WithTimeout(time.Duration(req.TimeoutMs)*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := a.cl.Start(ctx, req.Function, msgpack.RawMessage(input), opts...)
	if err != nil {
		reply.Error = errorOf(err)
		return reply
	}
	reply.ExecutionID = id
	return reply
}

func (a *api) result(ctx context.Context, m *nats.Msg, isJSON bool) any {
	reply := &resultReply{ProtocolVersion: messages.ProtocolVersion}
	var req resultRequest
	if reply.Error = readRequest("result", m.Data, isJSON, &req); reply.Error != nil {
		return reply
	}
	if req.WaitMs < 0 {
		reply.Error = &apiError{Type: apiBadRequest, Message: "result: waitMs must not be negative"}
		return reply
	}
	if req.WaitMs > 0 {
		wctx, cancel := context.WithTimeout(ctx, min(time.Duration(req.WaitMs)*time.Millisecond, maxResultWait))
		err := a.cl.Result(wctx, req.ExecutionID, nil)
		cancel()
		var ee *client.ExecutionError
		if err != nil && !errors.As(err, &ee) && !errors.Is(err, context.DeadlineExceeded) {
			reply.Error = errorOf(err)
			return reply
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rec, err := a.cl.Lookup(rctx, req.ExecutionID)
	if err != nil {
		reply.Error = errorOf(err)
		return reply
	}
	reply.ExecutionID, reply.Function, reply.Status = rec.ID, rec.Function, rec.Status
	reply.CreatedAt = rec.CreatedAt.UTC().Format(time.RFC3339Nano)
	if rec.EndedAt != nil {
		reply.EndedAt = rec.EndedAt.UTC().Format(time.RFC3339Nano)
	}
	if rec.Error != nil {
		reply.Error = &apiError{Type: rec.Error.Type, Message: rec.Error.Message}
	}
	if len(rec.Result) > 0 {
		if !isJSON {
			reply.Result = msgpack.RawMessage(rec.Result)
		} else if reply.Result, err = jsonvalue.FromMsgpack(rec.Result); err != nil {
			reply.Error = &apiError{Type: apiInternal, Message: "result: cannot show the result as JSON: " + err.Error()}
		}
	}
	return reply
}

func (a *api) cancel(ctx context.Context, m *nats.Msg, isJSON bool) any {
	reply := &idReply{ProtocolVersion: messages.ProtocolVersion}
	var req cancelRequest
	if reply.Error = readRequest("cancel", m.Data, isJSON, &req); reply.Error != nil {
		return reply
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.cl.Cancel(ctx, req.ExecutionID, client.WithReason(req.Reason)); err != nil {
		reply.Error = errorOf(err)
		return reply
	}
	reply.ExecutionID = req.ExecutionID
	return reply
}
