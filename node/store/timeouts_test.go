package store

import (
	"testing"
	"time"
)

// TestTimeoutsFor: the client's timeouts follow redis_timeout, and a
// dial_timeout in the URL replaces the dial's. node's TestDialTimeout
// checks the same rule against a connect that hangs; this one names every
// timeout the client gets, sentinels' and the write timeout included.
func TestTimeoutsFor(t *testing.T) {
	f := func(url string, redisTimeout, dial, write, mgmt time.Duration) {
		t.Helper()
		to := TimeoutsFor(redisTimeout)
		if to.Decision != redisTimeout || to.Management != mgmt {
			t.Errorf("TimeoutsFor(%s) = %+v; want decision %s, management %s", redisTimeout, to, redisTimeout, mgmt)
		}
		s, err := NewRedisStore(url, "rl", to)
		if err != nil {
			t.Fatal(err)
		}
		if s.opt.Dialer.Timeout != dial || s.opt.Sentinel.Dialer.Timeout != dial || s.opt.ConnWriteTimeout != write {
			t.Errorf("NewRedisStore(%q, redis_timeout %s): dial %s, sentinel dial %s, write %s; want %s, %s, %s",
				url, redisTimeout, s.opt.Dialer.Timeout, s.opt.Sentinel.Dialer.Timeout, s.opt.ConnWriteTimeout, dial, dial, write)
		}
	}
	const ms = time.Millisecond
	f("redis://a:1", 50*ms, time.Second, time.Second, time.Second) // at least 1 s
	f("redis://a:1", 100*ms, 2*time.Second, 2*time.Second, 2*time.Second)
	f("redis://a:1?dial_timeout=0", 100*ms, 2*time.Second, 2*time.Second, 2*time.Second) // 0: the default
	f("redis://a:1?dial_timeout=2500ms", 10*ms, 2500*ms, 2500*ms, time.Second)           // the URL's wins
	f("redis://a:1?dial_timeout=300ms", time.Second, 300*ms, time.Second, 20*time.Second)
	f("redis://s1:26379,s2:26379?master_set=m&dial_timeout=700ms", 50*ms, 700*ms, time.Second, time.Second)
}
