package limiter

// Params are the integer inputs of one decision. They are the same numbers,
// in the same units, that the Lua scripts receive, so both forms decide alike.
type Params struct {
	Limit  int64 // units per window
	Window int64 // microseconds
	Burst  int64 // token bucket capacity; 0 for the other algorithms
	Cost   int64 // units asked for; 0 peeks without consuming
}

// Result is one decision. Durations are microseconds.
type Result struct {
	Allowed    bool
	Remaining  int64 // units still available after this decision
	ResetAfter int64 // until the key is back to its full quota
	RetryAfter int64 // until the same request could be admitted; 0 when allowed
	// NextAfter is until Remaining grows by at least one unit: the RateLimit
	// field's t. 0 when the key has its full quota. For a denied cost-1
	// request it equals RetryAfter.
	NextAfter int64
}
