// Command hello is a stand-in static binary for the imagebuild test.
package main

import (
	"fmt"
	"os"
)

// Version is set with -ldflags -X in the test, like the real binary's.
var Version = "dev"

func main() {
	fmt.Printf("hello %s uid=%d\n", Version, os.Getuid())
}
