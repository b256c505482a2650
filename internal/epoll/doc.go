// Package epoll is an epoll instance whose events carry 64-bit ids, with
// a pipe that interrupts its wait: what internal/idle's parking and
// internal/loop's event loops have in common. Linux only.
package epoll
