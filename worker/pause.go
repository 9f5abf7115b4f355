package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// pause is the account-wide pause, shared through Redis by every worker process: while it holds,
// no process submits. It is the only account pause; the rate limiters' cool-downs after a 429
// are theirs.
type pause struct {
	rdb redis.UniversalClient
	key string
	now func() time.Time
}

// causeByName reads back the cause a pause was stored with.
var causeByName = func() map[string]Cause {
	m := map[string]Cause{}
	for c := CauseOther; c <= CauseNotFound; c++ {
		m[c.String()] = c
	}
	return m
}()

// set pauses the account for cause until now+d unless it is already paused longer, and returns
// the pause as a task waiting on it sees it.
func (p *pause) set(ctx context.Context, cause Cause, d time.Duration) (*PausedError, error) {
	now := p.now()
	until := now.Add(d)
	err := p.rdb.Eval(ctx, `
local cur = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if cur < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'until', ARGV[1], 'reason', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
end
return 1`, []string{p.key}, until.UnixMilli(), cause.String()).Err()
	if err != nil {
		return nil, fmt.Errorf("pausing the account: %w", err)
	}
	return &PausedError{Until: until, Cause: cause, now: now}, nil
}

// get reports an active pause.
func (p *pause) get(ctx context.Context) (*PausedError, error) {
	m, err := p.rdb.HGetAll(ctx, p.key).Result()
	if err != nil {
		return nil, fmt.Errorf("reading account pause: %w", err)
	}
	var ms int64
	fmt.Sscan(m["until"], &ms)
	now := p.now()
	if ms == 0 || time.UnixMilli(ms).Before(now) {
		return nil, nil
	}
	return &PausedError{Until: time.UnixMilli(ms), Cause: causeByName[m["reason"]], now: now}, nil
}

// clear lifts a pause given for cause.
func (p *pause) clear(ctx context.Context, cause Cause) error {
	return p.rdb.Eval(ctx, `
if redis.call('HGET', KEYS[1], 'reason') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`, []string{p.key}, cause.String()).Err()
}
