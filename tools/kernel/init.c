/*
 * /init of the iommu-relay test VM's initramfs. Mounts the host's root read-only over 9p (tag "hostroot"),
 * gives it fresh /proc, /sys, /dev and a writable tmpfs /run (not /tmp: the checkout may live there), chroots into it and runs the shell script named by the
 * first argument after "--" on the kernel command line. Prints the script's exit status as
 * "IOMMU_RELAY_GUEST_EXIT <status>" and powers off, so QEMU exits.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void must_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data) != 0)
		printf("init: mount %s on %s (%s) failed: %s\n", src, dst, type, strerror(errno));
}

static void power_off(int status)
{
	printf("IOMMU_RELAY_GUEST_EXIT %d\n", status);
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	must_mount("proc", "/proc", "proc", 0, NULL);
	must_mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	must_mount("hostroot", "/host", "9p", MS_RDONLY,
		   "trans=virtio,version=9p2000.L,cache=loose,msize=512000");
	must_mount("proc", "/host/proc", "proc", 0, NULL);
	must_mount("sysfs", "/host/sys", "sysfs", 0, NULL);
	must_mount("devtmpfs", "/host/dev", "devtmpfs", 0, NULL);
	must_mount("tmpfs", "/host/run", "tmpfs", 0, "size=1g");
	if (argc < 2) {
		printf("init: no script given (kernel command line: ... -- /path/to/script)\n");
		power_off(127);
	}
	if (chroot("/host") != 0 || chdir("/") != 0) {
		printf("init: chroot /host failed: %s\n", strerror(errno));
		power_off(126);
	}
	pid_t pid = fork();
	if (pid == 0) {
		char *args[] = { "/bin/sh", argv[1], NULL };
		char *env[] = { "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/run", "TMPDIR=/run", NULL };
		execve("/bin/sh", args, env);
		printf("init: exec /bin/sh failed: %s\n", strerror(errno));
		_exit(127);
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	power_off(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 0;
}
