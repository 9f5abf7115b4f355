// Package redisconn opens the one Redis client a kontextq process shares, from REDIS_URL in
// go-redis's own URL forms:
//
//	redis://[user:password@]host:port/db                    a single node (rediss:// for TLS)
//	redis://[user:password@]host:port?addr=host2:port&...   a Cluster: every address is a seed
//	redis://[s-user:s-password@]sentinel:26379?master_name=NAME&addr=sentinel2:26379&password=...
//	                                                        Sentinel: the addresses are sentinels,
//	                                                        password= is the master's
//	unix:///path/redis.sock?db=N                            a single node on a Unix socket
//
// A URL naming one node that turns out to be a Cluster node (INFO cluster says so) is opened as a
// Cluster seeded by it, so a Cluster is reached with one address too. Everything else is
// go-redis's: ParseURL, ParseClusterURL and ParseFailoverURL read the options.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Mode is the shape of the Redis deployment a URL names.
type Mode string

const (
	Single   Mode = "single"
	Sentinel Mode = "sentinel"
	Cluster  Mode = "cluster"
)

// Target is a parsed REDIS_URL.
type Target struct {
	Mode     Mode
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
	raw      string
}

// Parse reads a Redis URL without connecting. Its errors are go-redis's, which name the scheme,
// path or option at fault and never the password.
func Parse(raw string) (*Target, error) {
	t := &Target{raw: raw}
	q := url.Values{}
	if u, err := url.Parse(raw); err == nil {
		q = u.Query()
	}
	var err error
	switch {
	case q.Has("master_name"):
		t.Mode = Sentinel
		t.failover, err = redis.ParseFailoverURL(raw)
		if err == nil && t.failover.MasterName == "" {
			err = errors.New("redis: master_name is empty")
		}
		if err == nil {
			rideOutFailover(t.failover, q)
		}
	case q.Has("addr"):
		t.Mode = Cluster
		t.cluster, err = redis.ParseClusterURL(raw)
	default:
		t.Mode = Single
		t.single, err = redis.ParseURL(raw)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// A Sentinel failover takes the sentinels' down-after-milliseconds plus an election, a few
// seconds when tuned. go-redis retries a failed command 3 times within about a second; here a
// command is retried for about 15 s instead (unless the URL says otherwise), asking the sentinels
// for the master again at each new connection, so a failover that short is a pause to the work,
// not a burst of errors. It matters because of asynq: a task whose completion fails to reach Redis
// is retried by asynq's syncer with a context already cancelled, so it stays "active" until its
// lease expires and asynq's recoverer, once a minute, takes it back: one to two minutes late.
const (
	failoverRetries    = 30
	failoverMaxBackoff = time.Second
)

func rideOutFailover(o *redis.FailoverOptions, q url.Values) {
	if !q.Has("max_retries") {
		o.MaxRetries = failoverRetries
	}
	if !q.Has("max_retry_backoff") {
		o.MaxRetryBackoff = failoverMaxBackoff
	}
	if !q.Has("min_retry_backoff") {
		o.MinRetryBackoff = 50 * time.Millisecond
	}
}

// Open connects to the Redis that raw names and checks that it answers.
func Open(ctx context.Context, raw string) (redis.UniversalClient, error) {
	t, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return t.Open(ctx)
}

// Open connects to t and checks that it answers within five seconds.
func (t *Target) Open(ctx context.Context) (redis.UniversalClient, error) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var rdb redis.UniversalClient
	switch t.Mode {
	case Sentinel:
		rdb = &failoverClient{Client: redis.NewFailoverClient(t.failover), opt: t.failover}
	case Cluster:
		rdb = redis.NewClusterClient(t.cluster)
	default:
		c := redis.NewClient(t.single)
		info, err := c.Info(pctx, "cluster").Result()
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		if !strings.Contains(info, "cluster_enabled:1") {
			return c, nil
		}
		_ = c.Close()
		if t.single.DB != 0 {
			return nil, fmt.Errorf("%s is a Redis Cluster node, and a Cluster has database 0 only, not %d", t.single.Addr, t.single.DB)
		}
		o, err := redis.ParseClusterURL(t.raw)
		if err != nil {
			return nil, fmt.Errorf("%s is a Redis Cluster node: %w", t.single.Addr, err)
		}
		t.Mode, t.cluster = Cluster, o
		rdb = redis.NewClusterClient(o)
	}
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return rdb, nil
}

// failoverClient is a Sentinel-managed client that remembers its options, so that the dashboard,
// which opens its own connections, can reach the same master.
type failoverClient struct {
	*redis.Client
	opt *redis.FailoverOptions
}

// ModeOf reports the shape of the deployment rdb is connected to.
func ModeOf(rdb redis.UniversalClient) Mode {
	switch rdb.(type) {
	case *redis.ClusterClient:
		return Cluster
	case *failoverClient:
		return Sentinel
	}
	return Single
}

// ConnOpt describes rdb's connection for code that must open its own (the asynq dashboard).
// It is nil for a client this package did not make and cannot describe.
func ConnOpt(rdb redis.UniversalClient) asynq.RedisConnOpt {
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		o := c.Options()
		return asynq.RedisClusterClientOpt{Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig}
	case *failoverClient:
		o := c.opt
		return asynq.RedisFailoverClientOpt{MasterName: o.MasterName, SentinelAddrs: o.SentinelAddrs,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword,
			Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig, PoolSize: 4}
	case interface{ Options() *redis.Options }: // *redis.Client, and wrappers of one
		o := c.Options()
		return asynq.RedisClientOpt{Network: o.Network, Addr: o.Addr, Username: o.Username, Password: o.Password,
			DB: o.DB, TLSConfig: o.TLSConfig, PoolSize: 4}
	}
	return nil
}
