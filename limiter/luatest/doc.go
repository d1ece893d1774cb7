// Package luatest holds no code: its tests run every decision of the limiter
// algorithms through the Go twin and through the Lua script on a real
// redis-server, and fail on any difference. They live apart from package
// limiter so that its test binary does not link rueidis: coverage-guided
// fuzzing (FuzzMatch) instruments every linked package and slows from about
// 50 000 to about 1 000 executions per second with it.
package luatest
