package sim

import "os"

// logLevel is SIM_LOG: a zerolog level for the logs of everything a sim
// test runs ("debug", "trace"); empty for silence.
var logLevel = os.Getenv("SIM_LOG")
