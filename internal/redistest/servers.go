package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kontextq/kontextq/internal/eventually"
)

// Redis deployments of their own for tests that need more than one node: redis-server processes
// on loopback ports, each in a directory of the test's, killed when the test ends. Tests using
// them are skipped when redis-server is not installed, unless CI is set: then they fail.

// Proc is one redis-server process.
type Proc struct {
	Addr string // 127.0.0.1:port
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Kill stops the process at once (SIGKILL), as a crash would, and waits for it to exit.
func (p *Proc) Kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Client is a plain client of this one process.
func (p *Proc) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// serverPath finds redis-server, skipping (or, in CI, failing) the test without it.
func serverPath(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("redistest: %s not found (%v); CI requires it (.ci/run installs Debian's redis-server)", name, err)
		}
		tb.Skipf("redistest: %s not found (%v); install Debian's redis-server to run this test", name, err)
	}
	return p
}

// freePort finds a loopback port that is free, and whose Cluster bus port (port+10000) is free too.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port
	}
	tb.Fatal("redistest: no free port pair")
	return 0
}

// startProc runs redis-server with a config file holding conf (plus port, directory and
// loopback binding) and waits until it answers PING.
func startProc(tb testing.TB, conf string, sentinel bool) *Proc {
	tb.Helper()
	bin := serverPath(tb, "redis-server")
	port := freePort(tb)
	dir := tb.TempDir()
	conf = fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsave \"\"\nappendonly no\nprotected-mode no\nrepl-diskless-sync-delay 0\n", port, dir) + conf
	cf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	args := []string{cf}
	if sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &Proc{Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("redistest: %s log:\n%s", p.Addr, tail(out.String(), 40))
		}
	})
	c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	eventually.True(tb, 10*time.Second, "redis-server on "+p.Addr+" to answer", func() bool {
		return c.Ping(context.Background()).Err() == nil
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// StartTLS starts a server that also listens with TLS, on a certificate of its own for
// 127.0.0.1 signed by no one the system trusts. It returns the process and the TLS address.
func StartTLS(tb testing.TB) (p *Proc, tlsAddr string) {
	tb.Helper()
	dir := tb.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := selfSigned(cert, key); err != nil {
		tb.Fatal(err)
	}
	port := freePort(tb)
	p = startProc(tb, fmt.Sprintf("tls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-auth-clients no\n", port, cert, key), false)
	return p, "127.0.0.1:" + strconv.Itoa(port)
}

// SentinelSet is a master, one replica and three sentinels watching them.
type SentinelSet struct {
	Master, Replica *Proc
	Sentinels       []*Proc
	MasterName      string
	// URL reaches the master through the sentinels, in go-redis's failover form.
	URL string
}

// StartSentinel starts a master, a replica and three sentinels (quorum 2) that declare the
// master down after one second without answers, and waits until the sentinels know the replica
// and each other, so that a failover can start as soon as the master dies.
func StartSentinel(tb testing.TB) *SentinelSet {
	tb.Helper()
	s := &SentinelSet{MasterName: "kq"}
	s.Master = startProc(tb, "", false)
	s.Replica = startProc(tb, "replicaof "+strings.Replace(s.Master.Addr, ":", " ", 1)+"\n", false)
	rc := s.Replica.Client(tb)
	eventually.True(tb, 10*time.Second, "the replica to sync", func() bool {
		info, _ := rc.Info(context.Background(), "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	for range 3 {
		conf := fmt.Sprintf("sentinel monitor %s %s 2\nsentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 10000\nsentinel parallel-syncs %[1]s 1\n",
			s.MasterName, strings.Replace(s.Master.Addr, ":", " ", 1))
		s.Sentinels = append(s.Sentinels, startProc(tb, conf, true))
	}
	for _, sp := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: sp.Addr})
		eventually.True(tb, 20*time.Second, "sentinel "+sp.Addr+" to know the replica and the other sentinels", func() bool {
			ctx := context.Background()
			reps, err1 := sc.Replicas(ctx, s.MasterName).Result()
			sens, err2 := sc.Sentinels(ctx, s.MasterName).Result()
			return err1 == nil && err2 == nil && len(reps) == 1 && len(sens) == 2
		})
		_ = sc.Close()
	}
	var extra []string
	for _, sp := range s.Sentinels[1:] {
		extra = append(extra, "addr="+sp.Addr)
	}
	s.URL = "redis://" + s.Sentinels[0].Addr + "/0?master_name=" + s.MasterName + "&" + strings.Join(extra, "&")
	return s
}

// WaitFailover waits until the sentinels name a master other than old.
func (s *SentinelSet) WaitFailover(tb testing.TB, old string, timeout time.Duration) string {
	tb.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0].Addr})
	defer sc.Close()
	var now string
	eventually.True(tb, timeout, "the sentinels to promote the replica", func() bool {
		a, err := sc.GetMasterAddrByName(context.Background(), s.MasterName).Result()
		if err != nil || len(a) != 2 {
			return false
		}
		now = net.JoinHostPort(a[0], a[1])
		return now != old
	})
	return now
}

// ClusterSet is a Redis Cluster of three masters (no replicas).
type ClusterSet struct {
	Nodes []*Proc
	// URL reaches the cluster in go-redis's cluster form: every node as a seed.
	URL string
}

// StartCluster starts three cluster-enabled servers, joins them with redis-cli --cluster create
// and waits until every node reports cluster_state:ok.
func StartCluster(tb testing.TB) *ClusterSet {
	tb.Helper()
	cli := serverPath(tb, "redis-cli")
	s := &ClusterSet{}
	for range 3 {
		s.Nodes = append(s.Nodes, startProc(tb, "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n", false))
	}
	args := []string{"--cluster", "create"}
	for _, n := range s.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, n := range s.Nodes {
		c := n.Client(tb)
		eventually.True(tb, 20*time.Second, "node "+n.Addr+" to report cluster_state:ok", func() bool {
			info, _ := c.ClusterInfo(context.Background()).Result()
			return strings.Contains(info, "cluster_state:ok")
		})
	}
	var extra []string
	for _, n := range s.Nodes[1:] {
		extra = append(extra, "addr="+n.Addr)
	}
	s.URL = "redis://" + s.Nodes[0].Addr + "?" + strings.Join(extra, "&")
	return s
}
