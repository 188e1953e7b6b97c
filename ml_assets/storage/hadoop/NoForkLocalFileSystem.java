// Hadoop's local file system that sets permissions without forking a process.
//
// Without Hadoop's native library (pip's pyspark ships none) RawLocalFileSystem.setPermission runs
// `chmod` in a child process for every file and folder it creates: ~4.5 ms each, so a range run
// writing one folder per day spends seconds in fork/exec. This class sets the same mode bits with
// java.nio in the JVM. Built at run time by ml_assets/storage/hadoop_local.py and used only for a
// local[...] master (executors on other JVMs would not have the class).
package ml_assets.hadoop;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.io.nativeio.NativeIO;

public class NoForkLocalFileSystem extends RawLocalFileSystem {
  // Bit i of FsPermission.toShort(), lowest first, as `chmod` reads an octal mode.
  private static final PosixFilePermission[] BITS = {
    PosixFilePermission.OTHERS_EXECUTE, PosixFilePermission.OTHERS_WRITE, PosixFilePermission.OTHERS_READ,
    PosixFilePermission.GROUP_EXECUTE, PosixFilePermission.GROUP_WRITE, PosixFilePermission.GROUP_READ,
    PosixFilePermission.OWNER_EXECUTE, PosixFilePermission.OWNER_WRITE, PosixFilePermission.OWNER_READ};
  private static final int STICKY_BIT = 01000;

  @Override
  public void setPermission(Path p, FsPermission permission) throws IOException {
    short mode = permission.toShort();
    // The native library chmods in-process already; java.nio cannot set the sticky bit.
    if (NativeIO.isAvailable() || (mode & STICKY_BIT) != 0) {
      super.setPermission(p, permission);
      return;
    }
    Set<PosixFilePermission> perms = EnumSet.noneOf(PosixFilePermission.class);
    for (int i = 0; i < BITS.length; i++) {
      if ((mode & (1 << i)) != 0) {
        perms.add(BITS[i]);
      }
    }
    try {
      // Follows symbolic links, as chmod does; a missing file raises NoSuchFileException.
      Files.setPosixFilePermissions(pathToFile(p).toPath(), perms);
    } catch (UnsupportedOperationException notPosix) {
      super.setPermission(p, permission);
    }
  }
}
