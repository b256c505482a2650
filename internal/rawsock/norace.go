//go:build !race

package rawsock

func beforeWrite() {}
func afterRead()   {}
