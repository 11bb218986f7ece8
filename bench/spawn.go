package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// Server is a parleyd process the generator started.
type Server struct {
	Base     string
	cmd      *exec.Cmd
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

var listening = regexp.MustCompile(`"msg":"parleyd listening","addr":"([^"]+)"`)

// Spawn starts `parleyd serve` from binary with args, serving n benchmark
// test numbers with code, and waits until it listens. Its log goes to logw.
// dir holds the test-numbers file.
func Spawn(binary, dir string, n int, code string, logw io.Writer, args ...string) (*Server, error) {
	return SpawnEnv(binary, dir, nil, n, code, logw, args...)
}

// SpawnEnv is Spawn with extra environment variables (KEY=VALUE) for the
// process, such as AWS credentials for an S3 attachment backend.
func SpawnEnv(binary, dir string, env []string, n int, code string, logw io.Writer, args ...string) (*Server, error) {
	numbers := filepath.Join(dir, "test-numbers")
	if err := os.WriteFile(numbers, []byte(TestNumbers(n, code)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--log-level", "info", "--test-numbers-file", numbers}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if m := listening.FindStringSubmatch(line); m != nil {
				ready <- m[1]
			}
			if logw != nil {
				fmt.Fprintln(logw, line)
			}
		}
		s.done <- cmd.Wait()
	}()
	select {
	case addr := <-ready:
		s.Base = "http://" + addr
		return s, nil
	case err := <-s.done:
		return nil, fmt.Errorf("parleyd exited before listening: %v", err)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, errors.New("parleyd did not start within 60 s")
	}
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop sends SIGTERM and waits for the process to exit; calling it again
// returns the first result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case s.stopErr = <-s.done:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			s.stopErr = errors.New("parleyd did not stop within 30 s of SIGTERM")
		}
	})
	return s.stopErr
}
