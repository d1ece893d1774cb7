package store

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestDialTimeoutFollowsRedisTimeout connects to a loopback port whose
// listen queue is full, so the kernel drops the SYN and the connect hangs
// until the dialer gives up. It must give up after redis_timeout, not after
// a fixed second.
func TestDialTimeoutFollowsRedisTimeout(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // never accepted
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the queue: once it holds more than the backlog, further SYNs are dropped.
	filled := false
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			filled = true
			break
		}
		defer c.Close()
	}
	if !filled {
		t.Fatalf("the listen queue of %s never filled: cannot make a connect hang", addr)
	}

	const redisTimeout = 100 * time.Millisecond
	s, err := NewRedisStore("redis://"+addr, "rl", TimeoutsFor(redisTimeout))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = s.Ping(ctx)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("Ping to a connect that hangs succeeded")
	}
	if took > 6*redisTimeout {
		t.Errorf("Ping with redis_timeout %v gave up after %v (%v); want about redis_timeout", redisTimeout, took, err)
	}
}
