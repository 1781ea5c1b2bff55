import Foundation

/// Debian's python3: the helpers the tests run in namespaces need only its standard
/// library, and it does not depend on the pyenv shims that `python3` on PATH resolves to.
let debianPython = "/usr/bin/python3"

/// Fails loudly when Debian's python3 is missing, naming the package.
func requireDebianPython() throws {
    if !FileManager.default.isExecutableFile(atPath: debianPython) {
        throw TestFailure("\(debianPython) is not installed: apt-get install -y python3")
    }
}
