package kie

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
)

// Generate creates a Flux Kontext task and returns its taskId. Success means created, not done:
// poll RecordInfo (or wait for the callback). Kie has no idempotency key, so every successful
// call is a new paid task; a 429 (IsRateLimited) was not queued and costs nothing.
func (c *Client) Generate(ctx context.Context, req GenerateRequest) (string, error) {
	var taskID string
	err := c.doJSON(ctx, epGenerate, req, func(data json.RawMessage) error {
		var d struct {
			TaskID json.RawMessage `json:"taskId"`
		}
		if err := decodeObject(data, &d); err != nil {
			return err
		}
		id, err := looseString(d.TaskID)
		if err != nil {
			return fmt.Errorf("taskId: %w", err)
		}
		if id == "" {
			return errors.New("no taskId")
		}
		taskID = id
		return nil
	})
	if err != nil {
		return "", err
	}
	return taskID, nil
}

// RecordInfo fetches a task's state. The record is decoded by DecodeRecord; a record for
// another task than the one asked for is a malformed answer (Code 0).
func (c *Client) RecordInfo(ctx context.Context, taskID string) (*Record, error) {
	if taskID == "" {
		return nil, errors.New("kie record-info: empty taskId")
	}
	var rec *Record
	err := c.do(ctx, call{ep: epRecordInfo, query: url.Values{"taskId": {taskID}}}, func(data json.RawMessage) error {
		r, err := DecodeRecord(data)
		if err != nil {
			return err
		}
		if r.TaskID == "" {
			r.TaskID = taskID
		} else if r.TaskID != taskID {
			return fmt.Errorf("record is for task %q, not %q", r.TaskID, taskID)
		}
		rec = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// Credits returns the account's remaining credits (possibly fractional).
func (c *Client) Credits(ctx context.Context) (float64, error) {
	var credits float64
	err := c.do(ctx, call{ep: epCredits}, func(data json.RawMessage) error {
		v, present, err := looseFloat(data)
		if err != nil {
			return err
		}
		if !present {
			return errors.New("no credit figure")
		}
		credits = v
		return nil
	})
	if err != nil {
		return 0, err
	}
	return credits, nil
}
