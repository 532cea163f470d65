package io.camundarelay.engine;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.actuate.autoconfigure.security.servlet.ManagementWebSecurityAutoConfiguration;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.security.oauth2.resource.servlet.OAuth2ResourceServerAutoConfiguration;
import org.springframework.boot.autoconfigure.security.servlet.SecurityAutoConfiguration;
import org.springframework.boot.autoconfigure.security.servlet.SecurityFilterAutoConfiguration;
import org.springframework.boot.autoconfigure.security.servlet.UserDetailsServiceAutoConfiguration;

/**
 * The Camunda 7 engine with its REST API at {@code /engine-rest} and the webapps
 * (Cockpit, Tasklist, Admin). Process models under {@code processes/} are deployed at start;
 * unchanged models are not redeployed.
 *
 * <p>Before anything starts, {@link TlsSettings} turns the {@code CAMUNDA_TLS_*} settings into
 * Spring's {@code server.ssl.*} and {@link StartupCheck} refuses unsafe settings (one line on
 * stderr, exit code 2).
 *
 * <p>Spring Security is on the class path for its JWT decoder only ({@link JwtAuthentication}):
 * its servlet auto-configurations are excluded, so there is no security filter chain, login
 * page or generated password; the engine's own filter ({@link RestAuthentication}) guards the
 * REST API and the webapps keep their own login.
 */
@SpringBootApplication(
    exclude = {
      SecurityAutoConfiguration.class,
      SecurityFilterAutoConfiguration.class,
      UserDetailsServiceAutoConfiguration.class,
      OAuth2ResourceServerAutoConfiguration.class,
      ManagementWebSecurityAutoConfiguration.class,
    })
public class EngineApplication {

  public static void main(String[] args) {
    SpringApplication application = new SpringApplication(EngineApplication.class);
    application.addListeners(new TlsSettings(), new StartupCheck());
    application.run(args);
  }
}
