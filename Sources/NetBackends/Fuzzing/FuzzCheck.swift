/// A fuzz target's check: unlike `precondition`, keeps its message in a release build,
/// so that a crash libFuzzer finds says which property broke.
@inline(__always)
func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}
