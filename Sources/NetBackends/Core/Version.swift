/// The release of this package, as `netbe --version` prints it (semantic versioning:
/// the library's public API and the command's contract change only with the minor number).
public enum NetBackendsVersion {
    public static let string = "0.4.0"
}
