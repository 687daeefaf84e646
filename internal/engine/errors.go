package engine

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/jetflow/jetflow/messages"
)

// StepError is a step that failed after its retries, as it was recorded: the same value live and
// on replay.
type StepError struct {
	Name      string // the step's name
	ErrorType string // the type name of the error the step body returned
	Message   string
	Data      []byte
}

func (e *StepError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("step %q failed: %s", e.Name, e.Message)
	}
	return "step failed: " + e.Message
}

// ChildContextError is a child context whose function returned an error other than a step's.
type ChildContextError struct {
	Name      string
	ErrorType string
	Message   string
	Data      []byte
}

func (e *ChildContextError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("child context %q failed: %s", e.Name, e.Message)
	}
	return "child context failed: " + e.Message
}

// NonDeterminismError is replay finding, at a position, an operation different from the one
// checkpointed there. The execution fails with it.
type NonDeterminismError struct {
	OpID        string
	Want, Got   string // "STEP \"charge\"" and the like
	ExecutionID string
}

func (e *NonDeterminismError) Error() string {
	return fmt.Sprintf("non-deterministic replay of execution %s at operation %s: checkpoint has %s, handler now calls %s",
		e.ExecutionID, e.OpID, e.Want, e.Got)
}

// Typer lets an error name its own type in checkpoints and results.
type Typer interface{ ErrorTypeName() string }

// TypeName is the name recorded for err's type: its ErrorTypeName if it has one, else its Go type
// as package.Type.
func TypeName(err error) string {
	var t Typer
	if errors.As(err, &t) {
		return t.ErrorTypeName()
	}
	switch err.(type) {
	case *StepError:
		return "StepError"
	case *ChildContextError:
		return "ChildContextError"
	case *NonDeterminismError:
		return "NonDeterminismError"
	}
	rt := reflect.TypeOf(err)
	for rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	return rt.String()
}

// Info converts err for the wire. A *StepError passed on unchanged keeps its step's type and
// message, so it is rebuilt as the same *StepError.
func Info(err error) *messages.ErrorInfo {
	if se, ok := err.(*StepError); ok {
		return &messages.ErrorInfo{Type: se.ErrorType, Message: se.Message, Data: se.Data, FromStep: true}
	}
	if ce, ok := err.(*ChildContextError); ok {
		return &messages.ErrorInfo{Type: ce.ErrorType, Message: ce.Message, Data: ce.Data}
	}
	return &messages.ErrorInfo{Type: TypeName(err), Message: err.Error()}
}

// childError rebuilds a recorded child-context failure.
func childError(name string, info *messages.ErrorInfo) error {
	if info == nil {
		info = &messages.ErrorInfo{Type: "Unknown", Message: "failed without a recorded error"}
	}
	if info.FromStep {
		return &StepError{ErrorType: info.Type, Message: info.Message, Data: info.Data}
	}
	return &ChildContextError{Name: name, ErrorType: info.Type, Message: info.Message, Data: info.Data}
}
